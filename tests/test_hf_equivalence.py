"""Our GPT equals transformers' GPT-2 and Llama built from configs (random init, no download)."""

import json

import pytest
import torch

from models import CheckpointError, build, count_params, kv_cache, load_hf, variants

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

# transformers 5 renames `past_key_values` to `cache`; the old name still works across 4.x and 5.x.
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")

GPT2_CONFIGS = {
    "odd-sizes": dict(vocab_size=97, n_positions=40, n_embd=36, n_layer=3, n_head=3, n_inner=50),
    "square": dict(vocab_size=128, n_positions=64, n_embd=64, n_layer=2, n_head=4, tie_word_embeddings=False),
}
LLAMA_CONFIGS = {
    "gqa-odd": dict(vocab_size=101, hidden_size=48, intermediate_size=70, num_hidden_layers=3,
                    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64),
    "mha-tied": dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5),
}


def _perturb(model: torch.nn.Module) -> None:
    """Move norms and biases away from 1 / 0 and enlarge logits so the comparison means something."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
            elif "wte" in name or "embed_tokens" in name or "lm_head" in name:
                p.mul_(25.0)


def _hf_gpt2(**kw):
    kw.setdefault("bos_token_id", 0)
    kw.setdefault("eos_token_id", 0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)).eval()
    _perturb(model)
    return model


def _hf_llama(**kw):
    if "rope_theta" in kw and int(transformers.__version__.split(".")[0]) >= 5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": kw.pop("rope_theta")}
    kw.setdefault("bos_token_id", 0)
    kw.setdefault("eos_token_id", 0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval()
    _perturb(model)
    return model


def _assert_same_logits(hf, ours, vocab: int) -> None:
    idx = torch.randint(0, vocab, (2, 33))
    with torch.no_grad():
        expected = hf(idx).logits
        assert expected.abs().max() > 1.0
        torch.testing.assert_close(ours(idx), expected, atol=1e-4, rtol=0)
        cache = kv_cache.make("raw-fp32", ours.config, batch=2, max_len=33)
        stepped = torch.cat([ours(idx[:, :9], cache), *[ours(idx[:, t : t + 1], cache) for t in range(9, 33)]], 1)
        torch.testing.assert_close(stepped, expected, atol=1e-4, rtol=0)
        # transformers' own cached decode agrees too
        out = hf(idx[:, :9], use_cache=True)
        hf_steps = [out.logits]
        past = out.past_key_values
        for t in range(9, 33):
            out = hf(idx[:, t : t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            hf_steps.append(out.logits)
        torch.testing.assert_close(stepped, torch.cat(hf_steps, 1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", GPT2_CONFIGS)
def test_gpt2_in_memory(name: str) -> None:
    hf = _hf_gpt2(**GPT2_CONFIGS[name])
    ours = load_hf(hf)
    assert count_params(ours) == sum(p.numel() for p in hf.parameters())
    assert ours.config.tie_weights == GPT2_CONFIGS[name].get("tie_word_embeddings", True)
    _assert_same_logits(hf, ours, hf.config.vocab_size)


@pytest.mark.parametrize("name", LLAMA_CONFIGS)
def test_llama_in_memory(name: str) -> None:
    hf = _hf_llama(**LLAMA_CONFIGS[name])
    ours = load_hf(hf)
    assert count_params(ours) == sum(p.numel() for p in hf.parameters())
    _assert_same_logits(hf, ours, hf.config.vocab_size)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_from_checkpoint_directory(tmp_path, family: str) -> None:
    hf = _hf_gpt2(**GPT2_CONFIGS["odd-sizes"]) if family == "gpt2" else _hf_llama(**LLAMA_CONFIGS["mha-tied"])
    hf.save_pretrained(tmp_path)  # safetensors; a tied head is stored once
    assert list(tmp_path.glob("*.safetensors"))
    ours = load_hf(tmp_path)
    if ours.config.tie_weights:
        assert ours.lm_head.weight.data_ptr() == ours.tok_emb.weight.data_ptr()
    _assert_same_logits(hf, ours, hf.config.vocab_size)


def test_default_gpt2_config_counts() -> None:
    """transformers' GPT2Config defaults are GPT-2 small: 124,439,808 parameters tied."""
    cfg = transformers.GPT2Config()
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(cfg)
    assert sum(p.numel() for p in hf.parameters()) == 124_439_808
    from models.hf import gpt2_config

    ours = build(gpt2_config(cfg.to_dict()), device="meta")
    assert count_params(ours) == 124_439_808


def test_bad_checkpoints(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        load_hf(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="allowed values: gpt2, llama"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        load_hf(tmp_path)
    hf = _hf_gpt2(**GPT2_CONFIGS["odd-sizes"], activation_function="relu")
    with pytest.raises(CheckpointError, match="activation_function 'relu'"):
        load_hf(hf)


def test_checkpoint_tokenizer_windows_count_the_bytes_they_cover(tmp_path) -> None:
    from models.hf import CheckpointError, load_tokenizer, tokenized_windows

    from .helpers import write_byte_level_checkpoint

    path = write_byte_level_checkpoint(tmp_path / "ckpt")
    tokenizer = load_tokenizer(path)
    text = "def f(x):\n    return 'é' * x\n" * 40  # one 2-byte character per line
    windows, target_bytes = tokenized_windows(tokenizer, text, seq_len=31, count=5)
    assert windows.shape == (5, 32)
    assert torch.equal(windows[0, :4], torch.tensor(list(b"def ")))  # token id = byte value
    assert target_bytes == 5 * 31  # every byte-level token is one byte of text
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_tokenizer(tmp_path)  # a directory without tokenizer files


@pytest.mark.parametrize("tie", [True, False])
def test_our_gpt2_weights_run_in_transformers_with_the_same_logits(tie: bool) -> None:
    """`to_gpt2_lm_head` (the decode peer's transformers model, on our weights) is the inverse of `load_hf`:
    the same logits in transformers, and our own model back; a model of another shape is refused."""
    from models.hf import to_gpt2_lm_head

    cfg = variants.get("gpt2-tiny").replace(tie_weights=tie)
    ours = build(cfg, seed=5).eval()
    hf = to_gpt2_lm_head(ours)
    idx = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(load_hf(hf)(idx), ours(idx), atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match="not GPT-2-shaped"):
        to_gpt2_lm_head(build(cfg.replace(pos="rope"), seed=0))
