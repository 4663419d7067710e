"""`python -m profiles`: the printed profile and torch.profiler traces with time per op class."""

import json

import pytest

from models import build, variants
from profiles.__main__ import main
from profiles.trace import trace_decode


def test_profile_prints(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "CPU" in out and "torch" in out and "GPU" in out
    assert main(["--json"]) == 0
    assert "cpu_model" in json.loads(capsys.readouterr().out)


def test_trace_writes_chrome_trace_and_classifies_ops(tmp_path, capsys) -> None:
    out = tmp_path / "trace.json"
    assert main(["trace", "--variant", "llama-tiny", "--tokens", "8", "--prompt", "4", "--out", str(out)]) == 0
    trace = json.loads(out.read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"archbench::attention", "archbench::mlp", "archbench::norm", "archbench::head"} <= names
    printed = capsys.readouterr().out
    assert "attention" in printed and "%" in printed


def test_trace_times_every_class() -> None:
    model = build(variants.get("gpt2-tiny"), seed=0).eval()
    per_class = trace_decode(model, prompt_len=4, decode_tokens=6)
    assert all(per_class[c] > 0 for c in ("attention", "mlp", "norm", "head", "embedding")), per_class
    # hooks are removed afterwards: the model runs without archbench ranges
    assert not model._forward_hooks and not model.blocks[0].attn._forward_pre_hooks


def test_trace_unknown_variant_lists_names(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["trace", "--variant", "gpt5"])
    assert "valid names" in capsys.readouterr().err
