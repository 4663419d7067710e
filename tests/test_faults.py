"""Fault injection: each way a run, a cache or an input has gone wrong, reproduced, with the outcome
archbench promises (README, "Reliability") asserted.

- a run stopped mid-way (a worker's exit, SIGKILL, Ctrl-C, a rerun killed): what was measured survives
  and builds a report marked partial; a killed rerun leaves the previous outputs as they were;
- two runs into one --out: the second is refused, naming the first one's pid;
- cached artifacts (reference checkpoints, ONNX exports and fused graphs) cut short, scribbled,
  unrecorded or writable by others: rebuilt, with a message;
- inputs: a broken checkpoint, corrupt, foreign, malformed or wrong-typed results files, a baseline
  grown in place, a run of another preset, a report of two machines: a clear error or a correct result.
"""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_benchmark
import torch

from bench.__main__ import parse_args
from bench.run import INCOMING, INTERRUPTED_RUN, RECORDS, REPORT, RESULTS, rebuild_from_records
from models import ArchConfig, build
from models.onnx_export import OrtModel, export, fuse
from models.reference import TrainConfig, reference_model
from reports.__main__ import main as reports_main
from reports.build import build_report
from reports.check import check
from reports.load import ResultsFileError, load, load_baseline, to_frame

from .helpers import tiny_config

ROOT = Path(__file__).resolve().parent.parent
SMOKE = Path(__file__).parent / "data" / "smoke_results.json"
STUDIES = Path(__file__).parent / "data" / "studies_results.json"
SMALL = ArchConfig(n_layer=2, n_head=4, d_model=64, max_seq_len=64)


def _write(tmp_path: Path, name: str, payload: object) -> Path:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_a_crash_keeps_what_was_measured(tmp_path) -> None:
    """The worker dies mid-run (an exit, or killed by a signal): the command exits as a shell would say
    (128 + the signal), and the records measured so far still make results.json and the report. The two
    runs go side by side (mostly interpreter start-up)."""
    crashes = {"exit": (None, 3), "sigkill": (9, 128 + 9)}
    started = {}
    for name, (signal, _) in crashes.items():
        env = {"ARCHBENCH_TEST_CRASH_AFTER": "3", **({"ARCHBENCH_TEST_CRASH_SIGNAL": str(signal)} if signal else {})}
        argv = ["--preset", "smoke", "--backend", "torch-cpu", "--out", str(tmp_path / name), "--", "-p",
                "tests.crash_plugin"]
        started[name] = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    for name, proc in started.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == crashes[name][1], f"{name}: " + out[-2000:] + err[-2000:]
        assert "ended early" in out
        results = load(tmp_path / name / "results.json")
        assert results.partial and len(results.benchmarks) == 3
        assert "rebuilt from records" in (tmp_path / name / "index.html").read_text()
        rebuilt = json.loads((tmp_path / name / "results.json").read_text())  # its provenance survives the rebuild
        assert rebuilt["commit_info"] and rebuilt["datetime"] and rebuilt["version"] == pytest_benchmark.__version__
        assert all(b["group"] and "UNSERIALIZABLE" not in json.dumps(b["params"]) for b in rebuilt["benchmarks"])


def test_rebuild_tolerates_a_line_cut_short(tmp_path) -> None:
    good = {"benchmark": {"name": "b", "stats": {"mean": 1.0}, "extra_info": {
        "schema": 1, "study": "decode", "variant": "v", "backend": "torch-cpu", "params": {}, "metrics": {}}}}
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"machine_info": {"node": "n"}}) + "\n" + json.dumps(good) + "\n" + '{"bench')
    assert rebuild_from_records(records, tmp_path / "results.json") == 1
    assert load(tmp_path / "results.json").benchmarks[0]["name"] == "b"


def _wait_for_records(proc: subprocess.Popen, records: Path, count: int = 2) -> None:
    """Wait until a running `proc` has appended `count` benchmark records to `records` (it must still run)."""
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and records.read_text().count('"benchmark"') >= count:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the smoke run finished before it could be stopped mid-way"


def test_ctrl_c_mid_run_keeps_the_records_and_writes_the_report(tmp_path) -> None:
    """SIGINT to the whole process group (Ctrl-C in a terminal, or `timeout -s INT`): pytest-benchmark
    leaves an empty results file behind; the records rebuild it and the report is still written."""
    import signal

    out = tmp_path / "run"
    # As from a terminal: SIGINT at its default disposition. A test run started in the background by a
    # non-interactive shell (`pytest ... &`) ignores SIGINT, and its children inherit that.
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--preset", "smoke", "--only", "decode", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_records(proc, out / INCOMING / RECORDS)  # a run in progress writes in its work directory
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert "the run ended early" in output, output[-2000:]
    results = load(out / "results.json")
    assert results.partial and len(results.benchmarks) >= 2
    assert (out / "index.html").stat().st_size > 0


def _start_smoke(out: Path, select: str = "gpt2-tiny-torch-cpu-raw-T8") -> subprocess.Popen:
    """A smoke run of the decode benchmarks whose names match `select` (by default one: a run kept short)."""
    return subprocess.Popen([sys.executable, "-m", "bench", "--preset", "smoke", "--only", "decode", "--backend",
                             "torch-cpu", "--out", str(out), "--", "-k", select], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.thorough  # three runs, about 15 s: a rare path, run in CI
def test_a_rerun_killed_mid_way_keeps_the_previous_outputs_and_its_records(smoke_run: Path, tmp_path) -> None:
    """SIGKILL of a whole rerun into an old --out (a copy of a finished smoke run's): the previous results
    and report stay as they were; the killed run's records rebuild a report marked partial (`reports build
    DIR/.incoming/records.jsonl`); the next run keeps them as `interrupted-run` and says so."""
    import shutil
    import signal

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    before = {name: (out / name).read_bytes() for name in (RESULTS, REPORT)}
    second = _start_smoke(out, "gpt2-tiny")  # nine benchmarks: it is killed after the second
    records = out / INCOMING / RECORDS
    _wait_for_records(second, records)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=60)
    assert {name: (out / name).read_bytes() for name in (RESULTS, REPORT)} == before
    report = tmp_path / "partial.html"
    assert reports_main(["build", str(records), "--out", str(report)]) == 0
    assert load(records).partial and "rebuilt from records" in report.read_text()
    third = _start_smoke(out)
    output, _ = third.communicate(timeout=600)
    assert third.returncode == 0 and "was killed; its records are kept" in output
    assert (out / INTERRUPTED_RUN / RECORDS).exists() and not (out / INCOMING).exists()
    assert load(out / RESULTS).benchmarks and (out / RESULTS).read_bytes() != before[RESULTS]


def test_a_second_run_into_the_same_out_is_refused_with_the_first_ones_pid(tmp_path, capsys) -> None:
    from bench.run import OutputLock

    out = tmp_path / "busy"
    argv = ["--preset", "smoke", "--only", "decode", "--backend", "torch-cpu", "--out", str(out), "--", "-k",
            "gpt2-tiny-torch-cpu-raw-T8"]
    with OutputLock(out):
        proc = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2
        assert f"another archbench run (pid {os.getpid()}) is writing there" in proc.stderr
        assert not (out / RESULTS).exists()
    with OutputLock(out):  # free again once the first run ends
        pass


def test_a_broken_checkpoint_is_an_error_before_any_work(tmp_path, capsys) -> None:
    """--weights with a truncated safetensors file: `error: --weights DIR: FILE: cannot be read (...)`,
    exit status 2, before anything runs; a .bin that needs code to unpickle is refused with advice that
    does not say `weights_only=False`."""
    from models.hf import CheckpointError, load_hf

    from .helpers import write_byte_level_checkpoint

    ckpt = write_byte_level_checkpoint(tmp_path / "ckpt")
    weights = next(ckpt.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(SystemExit) as info:
        parse_args(["--weights", str(ckpt), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{weights}: cannot be read" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    weights.unlink()
    torch.save({"weight": torch.zeros(2), "extra": Path(".")}, ckpt / "pytorch_model.bin")  # a class to unpickle
    with pytest.raises(CheckpointError, match="archbench loads tensors only") as bad:
        load_hf(ckpt)
    assert "weights_only=False" not in str(bad.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ('{"benchmarks": [', "not valid JSON"),
        ('["a", "list"]', "not a pytest-benchmark results file"),
        ({"machine_info": {}, "benchmarks": [{"name": "x", "stats": {"mean": 1}, "extra_info": {}}]},
         "no archbench records"),
        ({"machine_info": {}, "benchmarks": []}, "no benchmarks"),
        ({"machine_info": {}, "benchmarks": [{"name": "x", "stats": {"mean": 1}, "extra_info": {"schema": 7}}]},
         "schema 7"),
    ],
)
def test_loader_rejects_bad_files_naming_them(tmp_path, content, message) -> None:
    path = _write(tmp_path, "bad.json", content)
    with pytest.raises(ResultsFileError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("results", [SMOKE, STUDIES], ids=["decode", "every-study"])
def test_report_from_two_machines_shows_both(results, tmp_path, unrasterised_figures) -> None:
    """Every section and summary line of a report of two machines (KV accuracy, INT8, the architecture
    studies and decode alike): a lookup that finds one row per machine must not reach a format string."""
    data = json.loads(results.read_text())
    other = copy.deepcopy(data)
    other["machine_info"]["archbench"]["label"] = "Second Machine X"
    other["machine_info"]["archbench"]["profile"]["cpu_model"] = "Second Machine X"
    a, b = _write(tmp_path, "a.json", data), _write(tmp_path, "b.json", other)
    html = build_report([a, b], tmp_path / "index.html").read_text()
    assert "Second Machine X" in html and data["machine_info"]["archbench"]["label"] in html
    assert set(to_frame([load(a), load(b)])["machine"]) == {data["machine_info"]["archbench"]["label"],
                                                             "Second Machine X"}


def test_a_run_of_another_preset_is_not_gated_figure_by_figure(tmp_path, capsys) -> None:
    """A smoke run against a quick baseline fails one clear gate, 'preset differs', instead of a failure for
    every figure the smaller preset measures differently; runs of one preset are gated as usual."""
    data = json.loads(SMOKE.read_text())
    quick = copy.deepcopy(data)
    quick["machine_info"]["archbench"]["preset"] = "quick"
    smoke = copy.deepcopy(data)
    smoke["machine_info"]["archbench"]["preset"] = "smoke"
    base, run = _write(tmp_path, "quick.json", quick), _write(tmp_path, "smoke.json", smoke)
    gates = check(load(base), load(run))
    assert [(g.gate, g.passed) for g in gates] == [("preset", False)]
    assert "preset differs: this run 'smoke'" in gates[0].value and "quick" in gates[0].limit
    assert reports_main(["check", "--baseline", str(base), str(run)]) == 1
    assert "preset differs" in capsys.readouterr().out
    assert all(g.passed for g in check(load(run), load(run)))


def test_a_baseline_grows_in_place_and_keeps_other_files(tmp_path) -> None:
    """Adding a run to a baseline from its own files (`baseline B/run-1.json new.json --to B`) keeps run-1,
    adds run-2 and leaves unrelated JSON in the directory alone (it used to empty the directory first and
    then fail to read its own input)."""
    to = tmp_path / "base"
    assert reports_main(["baseline", str(SMOKE), "--to", str(to)]) == 0
    (to / "notes.json").write_text('{"kept": true}')
    new = _write(tmp_path, "new.json", json.loads(SMOKE.read_text()))
    assert reports_main(["baseline", str(to / "run-1.json"), str(new), "--to", str(to)]) == 0
    assert sorted(p.name for p in to.iterdir()) == ["notes.json", "run-1.json", "run-2.json"]
    assert json.loads((to / "run-1.json").read_text()) == json.loads(SMOKE.read_text())
    assert len(load_baseline(to)) == 2  # the runs, not the notes
    assert reports_main(["check", "--baseline", str(to), str(SMOKE)]) == 0


def test_reports_cli_errors_name_the_file(tmp_path, capsys) -> None:
    bad = _write(tmp_path, "corrupt.json", "{nope")
    assert reports_main(["build", str(bad), "--out", str(tmp_path / "x.html")]) == 2
    assert "corrupt.json: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("fault", ["truncated", "scribbled", "no-checksum", "writable-by-others"])
def test_a_cached_reference_that_fails_its_check_is_trained_again(fault: str, tmp_path, capsys) -> None:
    """A cache entry cut short, overwritten with same-size bytes (it would load and give NaN), written
    without a checksum or open to other users is not used: it is trained again, and the run says why."""
    tc = TrainConfig(steps=4, batch_size=4, seq_len=32, eval_windows=4)
    first = reference_model(SMALL, tc, progress=False, directory=tmp_path)
    weights = next((tmp_path / "reference").glob("*/model.safetensors"))
    assert (weights.parent.stat().st_mode & 0o777) == 0o700  # private to the user
    data = weights.read_bytes()
    if fault == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif fault == "scribbled":
        weights.write_bytes(data[:-64] + b"\xff" * 64)  # same size: float bytes turned into NaN
    elif fault == "no-checksum":
        weights.with_name(weights.name + ".sha256").unlink()
    else:
        weights.chmod(0o666)
    capsys.readouterr()
    again = reference_model(SMALL, tc, progress=False, directory=tmp_path)
    assert not again.from_cache and "cannot be used" in capsys.readouterr().err
    assert again.val_bits_per_byte == first.val_bits_per_byte  # deterministic: the same model again
    assert reference_model(SMALL, tc, progress=False, directory=tmp_path).from_cache  # and now trusted


@pytest.mark.parametrize("fault", ["truncated", "scribbled"])
def test_a_cached_export_that_fails_its_check_is_exported_again(fault: str, tmp_path, capsys) -> None:
    """A truncated or scribbled export (and fused graph) is rebuilt, with a message, instead of being
    skipped forever or loaded as it is."""
    model = build(tiny_config(n_layer=1), seed=3).eval()
    path = export(model, tmp_path)
    fused = fuse(path, model.config)
    for target in (path, fused):
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2] if fault == "truncated" else data[:-16] + b"\x00" * 16)
    capsys.readouterr()
    again = export(model, tmp_path)
    fused_again = fuse(again, model.config)
    assert capsys.readouterr().err.count("cannot be used") == 2
    idx = torch.randint(0, model.config.vocab_size, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(OrtModel(fused_again, model.config)(idx), model(idx), atol=1e-4, rtol=0)



def _first_record(results: Path, study: str) -> dict:
    data = json.loads(results.read_text())
    return data, next(b for b in data["benchmarks"] if b["extra_info"]["study"] == study)


@pytest.mark.parametrize(("study", "part", "field", "value", "want"), [
    ("decode", "metrics", "kv_bytes", "oops", "not int"),
    ("decode", "params", "decode_tokens", [32], "not int"),
    ("decode", "metrics", "step_latency_s", {"8": "slow"}, "not dict[str, float]"),
    ("kv_accuracy", "metrics", "kl_mean_nats", None, "not float"),
    ("int8", "params", "scheme", 8, "not str"),
])
def test_a_record_field_of_the_wrong_type_is_named(study, part, field, value, want, tmp_path) -> None:
    """A record whose field is not of the type its study declares (`records.py`) is refused at load with
    the field, the value and the declared type, before any section meets it; `reports build` exits 2."""
    source = SMOKE if study == "decode" else STUDIES
    data, bench = _first_record(source, study)
    assert field in bench["extra_info"][part]  # the fault replaces a field the study really writes
    bench["extra_info"][part][field] = value
    path = _write(tmp_path, "typed.json", data)
    with pytest.raises(ResultsFileError, match=f"record's {part}.{field} is .*{re.escape(want)}"):
        load(path)
    assert reports_main(["build", str(path), "--out", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()
