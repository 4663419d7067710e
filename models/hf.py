"""Import of transformers checkpoints (GPT-2 and Llama architectures) into our GPT.

Sources: a local checkpoint directory (config.json plus *.safetensors, or pytorch_model*.bin read
with `torch.load(weights_only=True)`), or an in-memory transformers model. Nothing is downloaded and
nothing is unpickled beyond plain tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .config import ArchConfig
from .gpt import GPT, from_state_dict

if TYPE_CHECKING:  # transformers is imported only where a checkpoint is loaded
    from transformers import PreTrainedTokenizerBase

SUPPORTED_MODEL_TYPES = ("gpt2", "llama")
_GELU_FORMS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported (missing files, unsupported architecture or options)."""


def load_hf(src: str | Path | torch.nn.Module, *, dtype: torch.dtype = torch.float32) -> GPT:
    """Our GPT with the weights of a transformers GPT-2 or Llama model (same logits).

    `src` is a checkpoint directory or an in-memory transformers model (GPT2LMHeadModel,
    LlamaForCausalLM and their base models).
    """
    if isinstance(src, torch.nn.Module):
        hf_config = src.config.to_dict()
        state = {k: v.detach() for k, v in src.state_dict().items()}
    else:
        hf_config, state = _read_checkpoint(Path(src))
    if _check_model_type(hf_config) == "gpt2":
        cfg = gpt2_config(hf_config)
        ours = _gpt2_state(cfg, state)
    else:
        cfg = llama_config(hf_config)
        ours = _llama_state(cfg, state)
    model = from_state_dict(cfg, ours)
    return model.to(dtype).eval()


def _check_model_type(hf_config: dict) -> str:
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"model_type {model_type!r} is not supported; allowed values: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def inspect_checkpoint(path: str | Path) -> str:
    """Check a checkpoint directory without loading its weights (config.json readable and of a supported
    model_type; every safetensors file's header complete); returns its model_type, or raises
    CheckpointError naming the file and the problem."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json; it does not look like a transformers checkpoint")
    try:
        model_type = _check_model_type(json.loads(config_file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from None
    files = sorted(path.glob("*.safetensors"))
    if not files and not sorted(path.glob("pytorch_model*.bin")):
        raise CheckpointError(f"{path} has no *.safetensors or pytorch_model*.bin weights")
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                list(handle.keys())
        except Exception as exc:  # safetensors' own words (e.g. "incomplete metadata"), with the file
            raise CheckpointError(f"{file}: cannot be read ({type(exc).__name__}: {exc})") from None
    return model_type


def _read_checkpoint(path: Path) -> tuple[dict, dict[str, Tensor]]:
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; give a transformers checkpoint directory "
                              "(config.json + weights)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json; it does not look like a transformers checkpoint")
    try:
        hf_config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from None
    _check_model_type(hf_config)
    state: dict[str, Tensor] = {}
    safetensors_files = sorted(path.glob("*.safetensors"))
    bin_files = sorted(path.glob("pytorch_model*.bin"))
    if not safetensors_files and not bin_files:
        raise CheckpointError(f"{path} has no *.safetensors or pytorch_model*.bin weights")
    for file in safetensors_files or bin_files:
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(file)))
            else:  # tensors only: a pickle that needs code to load is refused, never run
                state.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as exc:  # the loader's own words, with the file they are about
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "weights_only" in str(exc):
                why = ("it holds more than tensors (a pickle that would run code to load); archbench loads "
                       "tensors only: save the checkpoint as safetensors")
            raise CheckpointError(f"{file}: cannot be read ({type(exc).__name__}: {why})") from None
    return hf_config, state


def _require(hf_config: dict, key: str, allowed: tuple, default: object = None) -> None:
    value = hf_config.get(key, default)
    if value not in allowed:
        raise CheckpointError(f"config {key}={value!r} is not supported; allowed values: {allowed}")


def gpt2_config(hf: dict) -> ArchConfig:
    """ArchConfig of a transformers GPT2Config dict."""
    _require(hf, "scale_attn_by_inverse_layer_idx", (False, None))
    _require(hf, "reorder_and_upcast_attn", (False, None))
    _require(hf, "scale_attn_weights", (True, None))
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _GELU_FORMS:
        raise CheckpointError(
            f"activation_function {activation!r} is not supported; allowed values: {', '.join(_GELU_FORMS)}"
        )
    return ArchConfig(
        vocab_size=hf["vocab_size"], n_layer=hf["n_layer"], n_head=hf["n_head"], d_model=hf["n_embd"],
        max_seq_len=hf["n_positions"], pos="learned", norm="pre_ln", mlp="gelu", bias=True,
        tie_weights=hf.get("tie_word_embeddings", True), d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), gelu_approximate=_GELU_FORMS[activation],
        init_std=hf.get("initializer_range", 0.02),
    )


def llama_config(hf: dict) -> ArchConfig:
    """ArchConfig of a transformers LlamaConfig dict (transformers 4.x `rope_theta` or 5.x `rope_parameters`)."""
    _require(hf, "hidden_act", ("silu",), "silu")
    rope = hf.get("rope_parameters") or {}
    rope_type = rope.get("rope_type") or (hf.get("rope_scaling") or {}).get("rope_type", "default")
    if rope_type != "default":
        raise CheckpointError(f"rope_type {rope_type!r} is not supported; allowed values: ('default',)")
    if hf.get("attention_bias", False) != hf.get("mlp_bias", False):
        raise CheckpointError("attention_bias and mlp_bias differ; allowed values: both True or both False")
    d_model, n_head = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or d_model // n_head
    if head_dim * n_head != d_model:
        raise CheckpointError(f"head_dim={head_dim} with {n_head} heads != hidden_size {d_model}; "
                              "only head_dim = hidden_size / num_attention_heads is supported")
    return ArchConfig(
        vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=n_head, d_model=d_model,
        n_kv_head=hf.get("num_key_value_heads") or n_head, d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048), pos="rope", norm="pre_rms", mlp="swiglu",
        bias=bool(hf.get("attention_bias", False)), tie_weights=bool(hf.get("tie_word_embeddings", False)),
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        init_std=hf.get("initializer_range", 0.02),
    )


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys relative to the base model, whether it was saved inside a *LMHeadModel or alone."""
    out = {}
    for key, value in state.items():
        out[key[len(prefix):] if key.startswith(prefix) else key] = value
    return out


def _take(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise CheckpointError(f"checkpoint is missing the tensor {key!r}")
    return state[key]


def _head(cfg: ArchConfig, state: dict[str, Tensor], embedding_key: str) -> dict[str, Tensor]:
    if cfg.tie_weights:
        return {"lm_head.weight": _take(state, embedding_key)}
    return {"lm_head.weight": _take(state, "lm_head.weight")}


def _gpt2_state(cfg: ArchConfig, hf: dict[str, Tensor]) -> dict[str, Tensor]:
    hf = _strip(hf, "transformer.")
    out = {"tok_emb.weight": _take(hf, "wte.weight"), "pos_emb.table.weight": _take(hf, "wpe.weight"),
           "norm_f.weight": _take(hf, "ln_f.weight"), "norm_f.bias": _take(hf, "ln_f.bias")}
    for i in range(cfg.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        # GPT-2's Conv1D stores (in, out); nn.Linear wants (out, in).
        pairs = {"norm_attn": "ln_1", "norm_mlp": "ln_2"}
        for ours, theirs in pairs.items():
            out[b + ours + ".weight"] = _take(hf, h + theirs + ".weight")
            out[b + ours + ".bias"] = _take(hf, h + theirs + ".bias")
        linears = {"attn.qkv": "attn.c_attn", "attn.out": "attn.c_proj", "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj"}
        for ours, theirs in linears.items():
            out[b + ours + ".weight"] = _take(hf, h + theirs + ".weight").t().contiguous()
            out[b + ours + ".bias"] = _take(hf, h + theirs + ".bias")
    out.update(_head(cfg, hf, "wte.weight"))
    return out


def to_gpt2_lm_head(model: GPT) -> torch.nn.Module:
    """transformers' GPT2LMHeadModel holding the weights of `model`, a GPT-2-shaped model of ours (learned
    positions, Pre-LN, biased GELU MLP of 4x width, full heads): the inverse of `load_hf`, so transformers
    can run our weights (the decode peer) and `load_hf` of the result gives `model` back."""
    import transformers

    cfg = model.config
    shape = (cfg.pos, cfg.norm, cfg.mlp, cfg.bias, cfg.ff_dim, cfg.kv_heads)
    if shape != ("learned", "pre_ln", "gelu", True, 4 * cfg.d_model, cfg.n_head):
        raise CheckpointError(f"this model (pos {cfg.pos}, norm {cfg.norm}, mlp {cfg.mlp}, bias {cfg.bias}, "
                              f"ff {cfg.ff_dim}, kv heads {cfg.kv_heads}) is not GPT-2-shaped: GPT2LMHeadModel "
                              "cannot hold it")
    activation = next(name for name, form in _GELU_FORMS.items() if form == cfg.gelu_approximate)
    hf_config = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model, n_layer=cfg.n_layer,
        n_head=cfg.n_head, activation_function=activation, layer_norm_epsilon=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_weights, initializer_range=cfg.init_std, bos_token_id=0, eos_token_id=0)
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    state = {"transformer.wte.weight": ours["tok_emb.weight"], "transformer.wpe.weight": ours["pos_emb.table.weight"],
             "transformer.ln_f.weight": ours["norm_f.weight"], "transformer.ln_f.bias": ours["norm_f.bias"],
             "lm_head.weight": ours.get("lm_head.weight", ours["tok_emb.weight"])}
    for i in range(cfg.n_layer):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        for mine, theirs in {"norm_attn": "ln_1", "norm_mlp": "ln_2"}.items():
            state[h + theirs + ".weight"] = ours[b + mine + ".weight"]
            state[h + theirs + ".bias"] = ours[b + mine + ".bias"]
        linears = {"attn.qkv": "attn.c_attn", "attn.out": "attn.c_proj", "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj"}
        for mine, theirs in linears.items():
            state[h + theirs + ".weight"] = ours[b + mine + ".weight"].t().contiguous()  # Conv1D: (in, out)
            state[h + theirs + ".bias"] = ours[b + mine + ".bias"]
    hf = transformers.GPT2LMHeadModel(hf_config)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight" or not cfg.tie_weights]:
        raise CheckpointError(f"GPT2LMHeadModel did not take every weight (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]})")
    return hf.to(next(model.parameters()).dtype).eval()


def _llama_state(cfg: ArchConfig, hf: dict[str, Tensor]) -> dict[str, Tensor]:
    hf = _strip(hf, "model.")
    out = {"tok_emb.weight": _take(hf, "embed_tokens.weight"), "norm_f.weight": _take(hf, "norm.weight")}
    for i in range(cfg.n_layer):
        h, b = f"layers.{i}.", f"blocks.{i}."
        out[b + "norm_attn.weight"] = _take(hf, h + "input_layernorm.weight")
        out[b + "norm_mlp.weight"] = _take(hf, h + "post_attention_layernorm.weight")
        names = ("weight", "bias") if cfg.bias else ("weight",)
        for name in names:
            qkv = [_take(hf, h + f"self_attn.{p}_proj.{name}") for p in ("q", "k", "v")]
            out[b + f"attn.qkv.{name}"] = torch.cat(qkv, dim=0)
            out[b + f"attn.out.{name}"] = _take(hf, h + f"self_attn.o_proj.{name}")
            for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                out[b + f"mlp.{ours}.{name}"] = _take(hf, h + f"mlp.{theirs}.{name}")
    out.update(_head(cfg, hf, "embed_tokens.weight"))
    return out


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a local checkpoint (transformers' AutoTokenizer, no download)."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # missing files, an unknown tokenizer class, transformers absent
        raise CheckpointError(f"{path}: no tokenizer could be loaded from the checkpoint directory "
                              f"({type(exc).__name__}: {exc}); accuracy on real weights needs the checkpoint's "
                              "tokenizer files (tokenizer.json, or vocab.json + merges.txt)") from None
    tokenizer.model_max_length = 1 << 40  # whole texts are tokenized, then cut into windows here
    return tokenizer


def tokenized_windows(tokenizer: PreTrainedTokenizerBase, text: str, seq_len: int, count: int) -> tuple[Tensor, int]:
    """Up to `count` evenly spaced windows of seq_len + 1 tokens of `text`, (n, seq_len + 1), and the
    number of text bytes their targets (tokens 1..seq_len of each window) cover, for bits per byte."""
    from .corpus import window_starts

    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)  # (N,)
    offsets = enc["offset_mapping"]
    starts = window_starts(ids.numel(), seq_len, count, what="the tokenized text")  # (n,)
    windows = ids[starts[:, None] + torch.arange(seq_len + 1)[None, :]]  # (n, seq_len + 1)
    target_bytes = sum(len(text[offsets[s + 1][0]: offsets[s + seq_len][1]].encode("utf-8"))
                       for s in starts.tolist())
    return windows, target_bytes
