"""ONNX export with the KV cache as explicit inputs/outputs, and onnxruntime parity with torch."""

import time

import pytest
import torch

from models import build, generate
from models.kv_base import KVCache
from models.onnx_export import ExportError, OrtModel, export, fuse, input_names, output_names

from .helpers import every_switch_tiered, tiny_config

onnx = pytest.importorskip("onnx", reason="onnx is needed to export")
pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported graphs")
pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def _model(**switches):
    cfg = tiny_config(n_layer=1, max_seq_len=96, **switches)
    model = build(cfg, seed=3).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
            elif "emb" in name or "lm_head" in name:
                p.mul_(20.0)
    return model


@pytest.mark.parametrize("graph", ["plain", "fused"])
@pytest.mark.parametrize("switches", every_switch_tiered())
def test_onnxruntime_equals_torch_for_every_switch(switches, graph, export_dir) -> None:
    """The plain export and the transformer optimizer's fused graph: logits within 1e-4 of eager torch at
    prefill and every step, presents growing by one, identical greedy tokens."""
    model = _model(**switches)
    path = export(model, export_dir)
    ort_model = OrtModel(fuse(path, model.config) if graph == "fused" else path, model.config)
    idx = torch.randint(0, model.config.vocab_size, (2, 12))  # batch 2
    with torch.no_grad():
        expected = model(idx)
        assert expected.abs().max() > 0.5
        cache = ort_model.make_cache(2, 12)
        prefill = ort_model(idx[:, :5], cache)
        torch.testing.assert_close(prefill, expected[:, :5], atol=1e-4, rtol=0)
        assert [s[2] for s in ort_model.present_shapes(cache)] == [5, 5]
        for t in range(5, 12):
            step = ort_model(idx[:, t : t + 1], cache)
            torch.testing.assert_close(step, expected[:, t : t + 1], atol=1e-4, rtol=0)
            assert all(s == (2, model.config.kv_heads, t + 1, model.config.head_dim)
                       for s in ort_model.present_shapes(cache))  # grew by exactly one
        # the past keeps the one cache protocol: every byte it holds is the raw fp32 cache's for 12 tokens
        assert isinstance(cache, KVCache) and cache.position == 12
        assert cache.nbytes == model.make_cache(2, 12).nbytes == 12 * cache.bytes_per_token
        prompt = idx[:1, :5]
        assert torch.equal(generate(ort_model, prompt, 64), generate(model, prompt, 64))


@pytest.mark.parametrize(("switches", "expected"), [
    ({"norm": "pre_ln", "mlp": "gelu"}, {"SkipLayerNormalization", "FastGelu"}),
    ({"norm": "pre_rms", "mlp": "swiglu"}, {"SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization"}),
])
def test_the_fused_graph_holds_onnxruntimes_fused_ops(switches, expected, export_dir) -> None:
    """The transformer optimizer fuses the norms (and GELU) of our export; the decoder reports what fused;
    the fused graph is cached beside the export."""
    model = _model(**switches)
    path = export(model, export_dir)
    fused = OrtModel(fuse(path, model.config), model.config)
    assert expected <= set(fused.fused_ops()) and fused.path.parent == path.parent
    assert not expected & set(OrtModel(path, model.config).fused_ops())
    assert fuse(path, model.config).stat().st_mtime_ns == fused.path.stat().st_mtime_ns  # reused


def test_scaled_embeddings_export_with_the_same_logits(export_dir) -> None:
    """Vaswani's sqrt(d_model) embedding scale: in the graph, equal logits, and a real change to them."""
    model = _model(pos="sinusoidal", norm="post_ln", embed_scale=True)
    ort_model = OrtModel(export(model, export_dir), model.config)
    idx = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        expected = model(idx)
        torch.testing.assert_close(ort_model(idx), expected, atol=1e-4, rtol=0)
        unscaled = build(model.config.replace(embed_scale=False))
        unscaled.load_state_dict(model.state_dict())
        assert (unscaled(idx) - expected).abs().max() > 1e-2


def test_grouped_heads_and_uncached_mode(export_dir) -> None:
    model = _model(pos="rope", norm="pre_rms", mlp="swiglu", n_kv_head=2)
    ort_model = OrtModel(export(model, export_dir), model.config)
    prompt = torch.randint(0, model.config.vocab_size, (2, 4))
    expected = generate(model, prompt, 20)
    assert torch.equal(generate(ort_model, prompt, 20, use_cache=False), expected)
    assert torch.equal(generate(ort_model, prompt, 20, use_cache=True), expected)


def test_graph_names_and_dynamic_dimensions(export_dir) -> None:
    model = _model()
    path = export(model, export_dir)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == input_names(model.config)
    assert [o.name for o in graph.output] == output_names(model.config)
    assert input_names(model.config)[1:3] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert output_names(model.config)[1:3] == ["present.0.key", "present.0.value"]
    ids_dims = graph.input[0].type.tensor_type.shape.dim
    past_dims = graph.input[1].type.tensor_type.shape.dim
    assert ids_dims[0].dim_param and ids_dims[1].dim_param  # batch and sequence stay symbolic
    assert past_dims[0].dim_param and past_dims[2].dim_param and past_dims[3].dim_value == model.config.head_dim
    onnx.checker.check_model(str(path))


def test_export_cache_reuse_and_refresh(export_dir) -> None:
    model = _model(pos="sinusoidal")
    first = export(model, export_dir)
    stamp = first.stat().st_mtime_ns
    start = time.perf_counter()
    assert export(model, export_dir) == first and first.stat().st_mtime_ns == stamp
    assert time.perf_counter() - start < 2.0  # reused, not re-exported
    changed_config = build(model.config.replace(norm="post_ln"), seed=3)
    assert export(changed_config, export_dir) != first
    changed_weights = _model(pos="sinusoidal")
    with torch.no_grad():
        changed_weights.tok_emb.weight.add_(1.0)
    assert export(changed_weights, export_dir) != first


def test_learned_positions_limit_is_enforced(export_dir) -> None:
    model = _model(pos="learned")
    ort_model = OrtModel(export(model, export_dir), model.config)
    from models import PositionLimitError

    with pytest.raises(PositionLimitError, match="holds 96"):
        ort_model(torch.zeros(1, 97, dtype=torch.long))


def test_export_failure_carries_the_exporters_message(monkeypatch, tmp_path) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="aten::frobnicate"):
        export(_model(), tmp_path)
    assert not list(tmp_path.rglob("*.onnx"))  # nothing half-written left under the key


def test_backend_reports_missing_packages(monkeypatch) -> None:
    import importlib.util

    from bench import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert "onnxruntime package is not installed" in backends.get("onnxruntime").unavailable_reason()
