"""The seams every addition relies on: backends answer by capability, cache kinds come from one registry,
studies from another, `models/` has no import circle, and no code outside the registries and presets
tests a backend's or a cache kind's name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from bench import backends, presets, studies
from models import kv_cache
from models.kv_base import AttendingCache, KVCache

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "profiles", "reports")
# The registries and the presets are the only places a backend's or a kind's name may be written.
REGISTRIES = {"bench/backends.py", "models/kv_cache.py", "bench/presets.py",
              "profiles/hardware.py"}  # the last: the software profile reads installed packages' versions by name
SWEEP_FILES = {f"bench/studies/{name}/__init__.py" for name in studies.STUDIES}  # each study's presets


def _sources() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def test_no_name_tests_outside_the_registries_and_presets() -> None:
    pattern = re.compile(r'"onnxruntime"|startswith\("torch|"raw-fp16"|int\(kind\[-1\]\)')
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources() for i, line in
            enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    allowed = REGISTRIES | SWEEP_FILES
    assert [h for h in hits if h.split(":")[0] not in allowed] == []


def test_no_suite_imports_from_a_conftest() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _sources() + sorted((ROOT / "tests").glob("*.py"))
                 if re.search(r"from \S*" + "conftest import", p.read_text())]
    assert offenders == []


def _module_imports(path: Path) -> set[str]:
    """The `models` modules `path` imports at module level or inside functions (relative or absolute)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("models."):
                found.add(node.module.split(".")[1])
    return found


def test_models_has_no_import_circle() -> None:
    modules = {p.stem: p for p in (ROOT / "models").glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in _module_imports(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import circle in models/: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_every_backend_answers_every_feature() -> None:
    for backend in backends.BACKENDS.values():
        assert backend.family and backend.device_type in ("cpu", "cuda")
        for feature in backends.FEATURES:
            for dtype in backends.DTYPE_NAMES:
                reason = backend.supports(dtype, feature)
                assert reason is None or (isinstance(reason, str) and reason)
        with pytest.raises(ValueError, match="allowed values: decode, cache-kinds"):
            backend.supports(torch.float32, "warp-drive")
    assert backends.reference("cpu").family == "torch" and backends.reference("cpu").supports(
        torch.float32, backends.CACHE_KINDS) is None
    with pytest.raises(ValueError, match="valid names: torch-cpu, torch-cuda, torch-compile"):
        backends.get("tpu")


def test_fusing_engines_run_a_norm_layer_like_eager_torch(monkeypatch) -> None:
    """The engines a fused-against-fused comparison uses: torch.compile and onnxruntime's opset-23 graph (one
    RMSNormalization op) give eager torch's output; torch.compile without a C++ compiler says why."""
    from models.layers import RMSNorm

    norm, x = RMSNorm(64, 1e-5).eval(), torch.randn(1, 16, 64)
    with torch.inference_mode():
        expected = norm(x)
        for backend in (b for b in backends.BACKENDS.values() if b.fuses_ops and b.device_type == "cpu"):
            if backend.unavailable_reason():
                continue
            prepared = backend.prepare_module(norm, x)
            torch.testing.assert_close(prepared.run(), expected, atol=1e-5, rtol=1e-5)
            assert prepared.ops in ((), ("RMSNormalization",))
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no C++ compiler" in backends.get("torch-compile").unavailable_reason()
    assert backends.get("torch-compile").supports(torch.float32, backends.DECODE) is None  # its static cache
    assert backends.get("torch-compile").supports(torch.float32, backends.GRAPH_QUANTIZATION) is not None


def test_an_engine_that_exports_its_graph_says_why_it_cannot_run_module_transforms() -> None:
    ort = next(b for b in backends.BACKENDS.values() if b.supports(torch.float32, backends.GRAPH_QUANTIZATION) is None)
    assert "torch module transforms do not apply" in ort.supports(torch.float32, backends.MODULE_TRANSFORMS)
    assert "fp16" in ort.supports(torch.float16, backends.DECODE)
    assert ort.supports(torch.float32, backends.DECODE) is None


def test_every_cache_kind_keeps_the_protocol_and_counts_its_bits() -> None:
    from .helpers import tiny_config

    cfg = tiny_config(d_model=64, n_head=4, n_kv_head=2)  # head_dim 16
    for kind, spec in kv_cache.CACHE_SPECS.items():
        cache = kv_cache.make(kind, cfg, batch=2, max_len=64)
        assert isinstance(cache, KVCache) and isinstance(cache, AttendingCache)
        assert cache.bytes_per_token == spec.bytes_per_token(cfg, 2)  # the meta-device count is exact
        assert cache.bits_per_coordinate == pytest.approx(spec.bits_per_coordinate(cfg, 64, 2))
        assert cache.bits_per_coordinate >= spec.code_bits  # metadata only ever adds
        if "key_group" in spec.options:  # the accuracy study offers every family the same exact recent keys
            assert kv_cache.make(kind, cfg, batch=2, max_len=64, key_group=16).exact_keys_from(40) == 32
    with pytest.raises(ValueError, match="valid names: raw-fp32, raw-fp16, raw-bf16, tq2"):
        kv_cache.spec("int3")
    assert kv_cache.raw_kind(torch.bfloat16) == "raw-bf16"
    assert kv_cache.representative_kinds() == ["raw-fp32", "tq3", "uniform3"]


def test_every_cache_kind_runs_a_prefill_and_decode_steps() -> None:
    """Each registered kind through a model: a prefill, then single-token steps; finite logits."""
    from models import build

    from .helpers import tiny_config

    model = build(tiny_config(d_model=64, n_head=2), seed=0).eval()  # head_dim 32
    idx = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.no_grad():
        full = model(idx)
        for kind in kv_cache.kinds():
            cache = kv_cache.make(kind, model.config, batch=2, max_len=24)
            steps = torch.cat([model(idx[:, :20], cache), *[model(idx[:, t:t + 1], cache) for t in range(20, 24)]], 1)
            assert steps.shape == full.shape and torch.isfinite(steps).all(), kind
            assert cache.position == 24, kind


def test_bits_per_coordinate_count_every_byte_of_metadata() -> None:
    """docs/references.md: TurboQuant at head_dim 64 and 3 bits stores 3 bits of codes plus a 16-bit norm per
    vector (3.25 bits); a KIVI-style uniform cache at 3 bits spends fp16 scale and offset per value vector
    and per 32-token key group (4.0 bits at head_dim 32). Fixed parts (the rotation, the keys' unfinished
    group) are amortised over the cache."""
    from .helpers import tiny_config

    hd64 = tiny_config(d_model=256, n_head=4)
    tq3 = kv_cache.spec("tq3").probe(hd64, tokens=1 << 20)
    assert tq3.bytes_per_token * 8 / tq3.coordinates_per_token == 3.25
    assert kv_cache.bits_per_coordinate("tq3", hd64, 1 << 20) == pytest.approx(3.25, abs=1e-3)
    hd32 = tiny_config(d_model=128, n_head=4)
    uniform3 = kv_cache.spec("uniform3").probe(hd32, tokens=1 << 20)
    assert uniform3.bytes_per_token * 8 / uniform3.coordinates_per_token == 4.0
    rotation = 32 * 32 * 4 * 8 / (1024 * 2 * 2 * 4 * 32)  # one 32 x 32 fp32 rotation over 1024 tokens
    assert kv_cache.bits_per_coordinate("tq3", hd32, 1024) == pytest.approx(3.5 + rotation, rel=1e-3)


def test_studies_are_registered_once_with_their_halves() -> None:
    for name, study in studies.STUDIES.items():
        assert study.name == name and study.suite.is_file() and study.records
        assert set(study.sweeps) <= set(presets.PRESETS)
        report, judge = study.report_half(), study.judge_half()
        assert callable(report.section) and callable(report.summary) and callable(judge.gates)
    ids = [c.id for c in studies.all_claims()]
    assert len(ids) == len(set(ids))
    with pytest.raises(ValueError, match="valid names: decode, kv, int8, lora, positions, norms, tying"):
        studies.get("nope")
