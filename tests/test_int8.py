"""INT8 transforms: round trip, torch's own per-channel quantizer, accuracy on the trained reference
model, the norm policy, the outlier split, onnxruntime's graphs, and bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import build, corpus
from models.int8 import (
    Int8DynamicLinear,
    Int8FakeQuantNorm,
    Int8OutlierLinear,
    Int8WeightOnlyLinear,
    model_bytes,
    onnx_unsupported_reason,
    quantize_int8,
    quantize_per_channel,
    quantize_per_token,
    quantize_torchao,
)

from .helpers import tiny_config


def test_round_trip_within_half_a_step_per_channel() -> None:
    w = torch.randn(48, 64) * torch.linspace(0.01, 3.0, 48)[:, None]  # channels of very different ranges
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (48,)  # one scale per output channel
    err = (q.float() * scale[:, None] - w).abs()
    assert torch.all(err <= scale[:, None] / 2 + 1e-7)
    assert torch.allclose(q.abs().amax(dim=1).float(), torch.full((48,), 127.0))  # each channel uses its range


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates its quantized tensors; used while they exist
def test_per_channel_codes_match_torchs_own_quantizer() -> None:
    if not hasattr(torch, "quantize_per_channel"):
        pytest.skip(f"torch {torch.__version__} no longer has torch.quantize_per_channel")
    w = torch.randn(32, 40)
    q, scale = quantize_per_channel(w)
    theirs = torch.quantize_per_channel(w, scale.double(), torch.zeros(32, dtype=torch.long), 0, torch.qint8)
    assert torch.equal(theirs.int_repr(), q)


def test_per_token_activation_quantization() -> None:
    x = torch.randn(5, 16) * torch.tensor([0.1, 1, 10, 100, 1000])[:, None]
    q, scale = quantize_per_token(x)
    assert scale.shape == (5, 1)
    assert torch.all((q.float() * scale - x).abs() <= scale / 2 + 1e-6)


@pytest.mark.parametrize("cls", [Int8WeightOnlyLinear, Int8DynamicLinear, Int8OutlierLinear])
def test_int8_linears_close_to_float(cls) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(3, 7, 64)
    out, ref = cls(linear)(x), linear(x)
    assert out.shape == ref.shape
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 0.02, rel


def test_outlier_columns_are_kept_in_float() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64) * 0.5
    x[:, 5] = 40.0  # one outlier feature, as in large transformers' residual streams
    split, plain = Int8OutlierLinear(linear), Int8DynamicLinear(linear)
    ref = linear(x)
    err_split = (split(x) - ref).norm() / ref.norm()
    err_plain = (plain(x) - ref).norm() / ref.norm()
    assert split.outlier_columns_seen == 1
    assert err_split < err_plain / 3  # the outlier no longer sets every token's activation scale


def test_transform_leaves_the_model_alone_and_swaps_every_projection() -> None:
    model = build(tiny_config(n_layer=2), seed=0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_int8(model, "w8a8", "quantize")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    kinds = {type(m).__name__ for m in q.modules()}
    assert "Linear" not in {type(m).__name__ for n, m in q.named_modules() if n.startswith("blocks")}
    assert {"Int8DynamicLinear", "Int8FakeQuantNorm"} <= kinds
    assert isinstance(q.lm_head, nn.Linear)  # the head only on request


def test_tied_head_gets_its_own_int8_copy() -> None:
    model = build(tiny_config(n_layer=1, tie_weights=True), seed=0).eval()
    q = quantize_int8(model, "weight_only", head=True)
    assert isinstance(q.lm_head, Int8WeightOnlyLinear)
    assert q.tok_emb.weight.dtype == torch.float32
    assert torch.equal(q.tok_emb.weight, model.tok_emb.weight)
    # bytes: the embedding in fp32 plus the head's int8 copy and scales
    vocab, d = model.config.vocab_size, model.config.d_model
    assert model_bytes(q) - model_bytes(quantize_int8(model, "weight_only")) == vocab * d + vocab * 4


def test_norm_policy_quantize_rounds_gain_and_input() -> None:
    model = build(tiny_config(n_layer=1), seed=0).eval()
    with torch.no_grad():
        model.norm_f.weight.uniform_(0.5, 1.5)
    norm = Int8FakeQuantNorm(model.norm_f)
    gain = norm.inner.weight
    step = gain.abs().max() / 127
    assert torch.allclose(torch.round(gain / step) * step, gain)  # on the int8 grid
    x = torch.randn(4, model.config.d_model)
    assert not torch.equal(norm(x), model.norm_f(x))


@pytest.fixture(scope="module")
def reference():
    from models.reference import reference_model

    model = reference_model(progress=False).model.eval()
    windows = corpus.eval_windows(corpus.load().tokens("val"), 128, 16)
    with torch.no_grad():
        ref = model(windows[:, :-1])
    return model, windows, ref


def _kl_top1(logits: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    log_p, log_q = F.log_softmax(ref, -1), F.log_softmax(logits, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    return kl, (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()


@pytest.mark.parametrize("scheme", ["weight_only", "w8a8", "llm_int8"])
def test_reference_model_accuracy_and_norm_policy(reference, scheme: str) -> None:
    model, windows, ref = reference
    with torch.no_grad():
        keep = quantize_int8(model, scheme, "keep")(windows[:, :-1])
        again = quantize_int8(model, scheme, "keep")(windows[:, :-1])
        quant = quantize_int8(model, scheme, "quantize")(windows[:, :-1])
    assert torch.equal(keep, again)  # deterministic
    kl_keep, top1_keep = _kl_top1(keep, ref)
    kl_quant, _ = _kl_top1(quant, ref)
    assert top1_keep > 0.97  # measured 0.988-0.997 on the reference model
    assert kl_keep < 1e-3
    assert kl_quant > 1.3 * kl_keep  # quantizing the norms measurably changes the outputs


def test_bad_input_names_the_valid_choices() -> None:
    model = build(tiny_config(n_layer=1), seed=0)
    with pytest.raises(ValueError, match="valid schemes: weight_only, w8a8, llm_int8"):
        quantize_int8(model, "int4")
    with pytest.raises(ValueError, match="valid policies: keep, quantize"):
        quantize_int8(model, "w8a8", "fp16")
    with pytest.raises(ValueError, match="valid schemes: ort_dynamic, ort_static"):
        onnx_unsupported_reason("w8a8", "keep")
    with pytest.raises(ValueError, match="valid policies: keep, quantize"):
        quantize_torchao(model, "torchao_int8_dynamic", "fp16")
    with pytest.raises(ValueError, match="valid configs: torchao_int8_weight_only, torchao_int8_dynamic"):
        quantize_torchao(model, "int4")


def test_onnxruntime_quantizers_say_which_norm_policy_they_cannot_apply() -> None:
    assert "LayerNormalization" in onnx_unsupported_reason("ort_dynamic", "quantize")
    assert onnx_unsupported_reason("ort_dynamic", "keep") is None
    assert onnx_unsupported_reason("ort_static", "quantize") is None


@pytest.mark.parametrize("config", ["torchao_int8_weight_only", "torchao_int8_dynamic"])
def test_torchao_quantizes_the_projections_like_ours_and_survives_the_backends_copy(config: str) -> None:
    """torchao's INT8 as a transform: int8 projections (the head kept float, norms wrapped), the same int8
    weights as ours (symmetric per output channel, rounded to nearest), logits close to our matching
    scheme's, the bytes counted through the tensor subclass, the same logits after the backend's copy."""
    from bench.backends import reference

    ours_scheme = {"torchao_int8_weight_only": "weight_only", "torchao_int8_dynamic": "w8a8"}[config]
    model = build(tiny_config(n_layer=2), seed=0).eval()
    quantized = quantize_torchao(model, config, "quantize")
    ours = quantize_int8(model, ours_scheme, "quantize")
    assert "Int8FakeQuantNorm" in {type(m).__name__ for m in quantized.modules()}
    qkv = quantized.blocks[0].attn.qkv.weight
    assert qkv.qdata.dtype == torch.int8 and not hasattr(quantized.lm_head.weight, "qdata")
    fp32 = model.blocks[0].attn.qkv.weight  # (out, in)
    ours_scale = ours.blocks[0].attn.qkv.weight_scale.reshape(-1, 1)  # (out, 1): max|w| / 127
    torch.testing.assert_close(qkv.scale, ours_scale, rtol=0.01, atol=0)  # torchao divides by 127.5
    assert ((qkv.qdata.float() * qkv.scale - fp32).abs() <= qkv.scale / 2 + 1e-7).all()  # rounded to nearest
    idx = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        ref, out, mine = model(idx), quantized(idx), ours(idx)
        assert 0 < (out - ref).abs().max() < 0.2
        assert (out - mine).abs().max() < 0.05
        torch.testing.assert_close(reference("cpu").prepare(quantized)(idx), out, atol=0, rtol=0)
    linear_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if n.endswith(("qkv.weight", "out.weight",
                                                                                          "up.weight", "down.weight")))
    assert model_bytes(model) - model_bytes(quantized) > 0.7 * linear_bytes  # int8 plus scales, not fp32


def _layer_norm_inputs(path) -> list[str]:
    """The op type producing the first input of every LayerNormalization node of the graph."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    return [producer.get(node.input[0], "graph input") for node in graph.node if node.op_type == "LayerNormalization"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime.quantization", reason="onnxruntime's quantization tools")
    pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript")
    from models.onnx_export import export

    model = build(tiny_config(n_layer=1, max_seq_len=64), seed=0).eval()
    directory = tmp_path_factory.mktemp("int8-onnx")
    return model, export(model, directory), directory


def _feeds(cfg, n: int = 4):
    import numpy as np

    from models.onnx_export import input_names

    names = input_names(cfg)
    empty = np.zeros((1, cfg.kv_heads, 0, cfg.head_dim), dtype=np.float32)
    rng = np.random.default_rng(0)
    return [{names[0]: rng.integers(0, cfg.vocab_size, (1, 16)), **{k: empty for k in names[1:]}} for _ in range(n)]


def test_onnxruntime_layer_norm_policies_in_the_graph(exported) -> None:
    from models.int8 import quantize_onnx
    from models.onnx_export import OrtModel

    model, path, directory = exported
    assert _layer_norm_inputs(path)  # the exporter emits LayerNormalization
    dynamic = quantize_onnx(path, directory / "dyn.onnx", "ort_dynamic")
    excluded = quantize_onnx(path, directory / "ex.onnx", "ort_static", "keep", _feeds(model.config))
    included = quantize_onnx(path, directory / "in.onnx", "ort_static", "quantize", _feeds(model.config))
    assert "DequantizeLinear" not in _layer_norm_inputs(dynamic)  # float in dynamic quantization
    assert "DequantizeLinear" not in _layer_norm_inputs(excluded)
    assert set(_layer_norm_inputs(included)) == {"DequantizeLinear"}  # wrapped in Q/DQ
    idx = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        ref = model(idx)
    for q in (dynamic, excluded, included):
        out = OrtModel(q, model.config)(idx)
        assert (out - ref).norm() / ref.norm() < 0.1  # runs and stays close to fp32
    with pytest.raises(ValueError, match="LayerNormalization"):
        quantize_onnx(path, directory / "x.onnx", "ort_dynamic", "quantize")
