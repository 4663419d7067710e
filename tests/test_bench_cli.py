"""`python -m bench` end to end on the smoke preset: results, report, crash survival, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.__main__ import parse_args
from bench.backends import get as get_backend
from bench.run import RESULTS
from bench.studies.decode import report as decode_report
from reports.__main__ import main as reports_main
from reports.load import load, to_frame

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_preset_writes_results_and_report(smoke_run: Path, capsys) -> None:
    tmp_path = smoke_run  # `python -m bench --preset smoke --backend torch-cpu --out DIR` (conftest)
    results = load(tmp_path / "results.json")
    assert not results.partial
    df = to_frame([results])
    decode = df[df["study"] == "decode"]
    assert set(decode["p_cache"].dropna()) == {"raw", "none"} and set(decode["backend"]) == {"torch-cpu"}
    assert set(df["backend_family"]) <= {"torch", "analytic"} and set(decode["device_type"]) == {"cpu"}
    kinds = df[(df["study"] == "kv_memory") & (df["p_phase"] == "decode")]
    assert {"tq3", "uniform3", "raw-fp32"} <= set(kinds["p_cache"])  # one kind of each family
    assert set(kinds["p_cache_family"]) == {"raw", "turboquant", "uniform"}
    assert (kinds[kinds["p_cache"] == "raw-fp32"]["m_bits_per_coordinate"] == 32.0).all()
    analysis = decode_report
    rows = analysis.decode_rows(df)
    assert rows["time_norm"].notna().all()  # every decode round has its calibration
    # the uncached rounds at the longest length (32) are paired with a cached run of that length
    uncached = rows[rows["p_cache"] == "none"]
    paired = uncached[uncached["m_paired_cached_s"].map(len) > 0]
    assert set(paired["p_decode_tokens"]) == {32} and len(paired) == 2
    assert all(len(r.m_paired_cached_s) == len(r.time_data) for r in paired.itertuples())
    assert (analysis.cache_payoff(df)["speedup_paired"] > 0).all()
    # every cached round has the read bandwidth probed right before and right after it
    cached = rows[rows["p_cache"] == "raw"]
    assert all(len(r.m_ceiling_before_Bps) == len(r.m_ceiling_after_Bps) == len(r.time_data)
               for r in cached.itertuples())
    assert (cached["probed_ceiling_Bps"] > 1e8).all() and (cached["probed_fraction"] > 0).all()
    assert not uncached["m_ceiling_before_Bps"].map(len).any()  # uncached rounds are not probed
    # serving figures from the instrumented cached run; the energy counter is read or its absence explained
    assert cached["m_ttft_s"].notna().all() and (cached["m_ttft_s"] > 0).all()
    assert (cached["m_tpot_p50_s"] <= cached["m_tpot_p90_s"]).all()
    assert (cached["m_tpot_p90_s"] <= cached["m_tpot_p99_s"]).all() and uncached["m_ttft_s"].isna().all()
    counter = results.archbench_info["energy"]["cpu"]
    assert counter.startswith("RAPL via powercap") == cached["m_energy_j"].map(len).astype(bool).all()
    assert counter.startswith(("RAPL via powercap", "not available here: "))
    assert results.archbench_info["ceilings"]["cpu"]["decode_Bps"] > 0
    assert results.archbench_info["backends"]["torch-cpu"]["engine"] == "torch eager"
    html = (tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "could not be built" not in html
    assert "Serving figures for" in html and "TPOT p99" in html and "energy counter (cpu)" in html
    assert "<code>results.json</code>" in html and str(tmp_path) not in html  # no path of this machine
    assert json.loads((tmp_path / "run-config.json").read_text())["preset"] == "smoke"
    reports_main(["check", "--baseline", str(tmp_path / "results.json"), str(tmp_path / "results.json")])
    check = capsys.readouterr().out
    # Against itself every relative gate passes; the absolute slope thresholds are not meaningful on
    # one round of 8-32 tokens, so only they may fail here.
    failed = [line for line in check.splitlines() if line.startswith("FAIL")]
    assert all(line.split()[1:3] in (["cached", "slope"], ["uncached", "slope"]) and "vs baseline" not in line
               for line in failed), check
    assert "PASS    identical tokens" in check and "gates passed" in check
    _pytest_benchmark_tools_read(tmp_path / "results.json")


def _pytest_benchmark_tools_read(results: Path) -> None:
    """pytest-benchmark's own tools on a run's results: every benchmark has a group (its study and the
    comparison within it) and JSON params; `compare` ranks within groups (no ">1000" ratio between unlike
    benchmarks) and groups by a param; its CSV has the params."""
    data = json.loads(results.read_text())
    benches = data["benchmarks"]
    assert all(b["group"] and b["group"].split(":")[0] == b["extra_info"]["study"] for b in benches)
    assert "UNSERIALIZABLE" not in json.dumps([b["params"] for b in benches])
    assert all(b["params"]["backend"] == b["extra_info"]["backend"] for b in benches)
    decode = [b for b in benches if b["extra_info"]["params"].get("phase") == "decode"]
    assert all(f"decode_tokens={b['params']['decode_tokens']}" in b["group"] for b in decode)
    assert data["commit_info"] and data["datetime"] and data["version"]

    def compare(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pytest_benchmark", "compare", str(results), *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def output(proc: subprocess.Popen) -> str:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        return out

    # side by side: each is mostly interpreter start-up
    table, by_backend, _ = map(output, [compare("--columns=min"), compare("--group-by=param:backend"),
                                        compare(f"--csv={results.with_suffix('')}")])  # pytest-benchmark adds .csv
    assert ">1000" not in table and "benchmark 'decode: decode gpt2-tiny decode_tokens=8'" in table
    assert "benchmark 'backend=torch-cpu'" in by_backend
    rows = results.with_suffix(".csv").read_text().splitlines()
    assert len(rows) == len(benches) + 1 and "param:decode_tokens" in rows[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "huge", "--out", "x"], "unknown preset 'huge'; valid names: smoke, quick, standard, full"),
        (["--backend", "tpu", "--out", "x"], "unknown backend 'tpu'; valid names: torch-cpu, torch-cuda"),
        (["--only", "nope", "--out", "x"], "unknown study 'nope'; valid names: decode"),
        (["--only", "kv,nope", "--out", "x"], "unknown study 'nope'; valid names: decode"),
        (["--shard", "3/2", "--out", "x"], "--shard '3/2': K must be between 1 and N"),
        (["--weights", "no/such/checkpoint", "--out", "x"], "--weights no/such/checkpoint: no such directory"),
        (["--weights", ".", "--out", "x"], "no config.json in it"),
        (["--out", "README.md"], "--out README.md: exists and is not a directory"),
        (["--out", "README.md/run"], "--out README.md/run: cannot write there (README.md is a file"),
    ],
)
def test_bad_arguments_list_the_valid_values(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_names_repeated_or_comma_separated_are_the_same_selection() -> None:
    listed = parse_args(["--only", "kv,int8", "--backend", "torch-cpu, onnxruntime", "--out", "x"])
    repeated = parse_args(["--only", "kv", "--only", "int8", "--only", "kv", "--backend", "torch-cpu", "--backend",
                           "onnxruntime", "--out", "x"])
    assert listed == repeated and listed.studies == ("kv", "int8") and listed.backends == ("torch-cpu", "onnxruntime")


def test_only_unavailable_backends_is_an_error_with_the_reason(capsys) -> None:
    reason = get_backend("torch-cuda").unavailable_reason()
    if reason is None:
        pytest.skip("torch-cuda is available here")
    with pytest.raises(SystemExit) as info:
        parse_args(["--backend", "torch-cuda", "--out", "x"])
    assert info.value.code == 2 and f"no requested backend is available here: torch-cuda: {reason}" in \
        capsys.readouterr().err
    assert parse_args(["--backend", "torch-cuda", "--backend", "torch-cpu", "--out", "x"]).backends == (
        "torch-cuda", "torch-cpu")  # one usable backend is enough: the other is skipped with its reason


def test_pytest_direct_use_skips_unavailable_backend_with_reason(tmp_path) -> None:
    """Plain pytest on a suite: the same validation as `python -m bench` (only unavailable backends is a
    usage error giving the reason), and an unavailable backend's cases skip with the reason."""

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: nothing to skip")

    def pytest_run(*backends: str) -> subprocess.CompletedProcess:
        args = [a for b in backends for a in ("--backend", b)]
        return subprocess.run([sys.executable, "-m", "pytest", "bench/studies/decode/test_decode.py", "--preset",
                               "smoke", *args, "-k", "torch-cuda", "--benchmark-disable", "-q", "-rs", "-p",
                               "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)

    only = pytest_run("torch-cuda")
    assert only.returncode == 4 and "no requested backend is available here: torch-cuda:" in only.stderr
    proc = pytest_run("torch-cuda", "torch-cpu")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "torch-cuda unavailable" in proc.stdout and " passed" not in proc.stdout
    skips = [line for line in proc.stdout.splitlines() if "torch-cuda unavailable" in line]
    assert len(skips) == 1 and skips[0].startswith("SKIPPED ["), skips  # one line per backend, its count


def test_accuracy_studies_run_on_a_checkpoint_given_with_weights(tmp_path) -> None:
    """--weights: the KV-cache and INT8 accuracy studies measure the user's checkpoint too, through its
    own tokenizer, and say so in their records; a run of the checkpoint's cases alone trains no reference
    model (the preparation makes what the selected cases read, nothing more)."""
    from .helpers import write_byte_level_checkpoint

    ckpt = write_byte_level_checkpoint(tmp_path / "my-gpt2")
    out, cache = tmp_path / "results.json", tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/studies/kv/test_kv.py",
                           "bench/studies/int8/test_int8.py", "-q",
                           "-p", "no:cacheprovider", "--preset", "quick", "--backend", "torch-cpu",
                           "--weights", str(ckpt), "-k", "checkpoint and (raw-fp32 or tq3 or w8a8 or fp32)",
                           f"--benchmark-json={out}"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "ARCHBENCH_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert not (cache / "reference").exists() and "reference model" not in proc.stderr, proc.stderr[-2000:]
    df = to_frame([load(out)])
    assert set(df["variant"]) == {"checkpoint:my-gpt2"}
    kv = df[df["study"] == "kv_accuracy"].set_index("p_cache")
    assert kv.loc["raw-fp32", "m_kl_mean_nats"] < 1e-9 and kv.loc["tq3", "m_kl_mean_nats"] > 0
    int8 = df[df["study"] == "int8"].set_index(["p_scheme", "p_norms"])
    assert int8.loc[("w8a8", "quantize"), "m_kl_mean_nats"] > int8.loc[("fp32", "keep"), "m_kl_mean_nats"]
    paired = int8.loc[("w8a8", "keep")]  # its fp32 model timed just before each of its timed rounds
    assert len(paired["m_fp32_paired_seconds"]) == len(paired["time_data"]) == 5
    assert all(t > 0 for t in paired["m_fp32_paired_seconds"])
    # a random 257-token model: about log2(257) = 8 bits per token, one byte per token
    assert 6.0 < kv.loc["raw-fp32", "m_bits_per_byte"] < 10.0


def test_the_peer_runs_the_checkpoints_own_class_and_names_it(tmp_path) -> None:
    """--weights with a Llama checkpoint: transformers' peer is the checkpoint's own class (not a GPT-2 with
    every weight missing), ours generates its tokens, and the records say `checkpoint:<name>`, so no
    GPT-2 124M target is applied to it."""
    from .helpers import write_byte_level_checkpoint

    ckpt = write_byte_level_checkpoint(tmp_path / "my-llama", model_type="llama")
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/studies/decode/test_decode.py", "-q",
                           "-p", "no:cacheprovider", "--preset", "quick", "--backend", "torch-cpu",
                           "--weights", str(ckpt), "-k", "peer", f"--benchmark-json={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    df = to_frame([load(out)])
    assert set(df["variant"]) == {"checkpoint:my-llama"} and df["m_tokens_identical"].all()


def test_shards_partition_the_benchmarks_and_keep_sweeps_whole() -> None:
    """--shard K/N splits the benchmarks without overlap or loss (a Slurm array: the test after next). The
    collections run side by side: they are mostly interpreter start-up."""
    def collect(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pytest", "bench", "--collect-only", "-q", "-p",
                                 "no:cacheprovider", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def tests(proc: subprocess.Popen) -> set[str]:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
        return {line for line in out.splitlines() if "::" in line}

    started = [collect("--preset", "smoke", *shard) for shard in ([], *(["--shard", f"{k}/3"] for k in (1, 2, 3)))]
    bad = collect("--shard", "0/2")
    everything, *shards = map(tests, started)
    assert set().union(*shards) == everything and sum(map(len, shards)) == len(everything)
    for shard in shards:  # every length of a decode sweep lands in the same shard
        for test in (t for t in shard if "test_decode[" in t and "-T8-" in t):
            assert test.replace("-T8-", "-T32-") in shard
    _, err = bad.communicate(timeout=300)
    assert bad.returncode != 0 and "K must be between 1 and N" in err


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (1, 4)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "2"}, (4, 4)),  # --array=1-7:2
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, "is not one of 4"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "give --shard K/N"),
])
def test_a_slurm_array_task_is_its_own_shard(environ, expected) -> None:
    from bench.run import ConfigError, shard_from_slurm

    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            shard_from_slurm(environ)
    else:
        assert shard_from_slurm(environ) == expected


@pytest.mark.thorough  # four runs; the partition itself is checked by the test above in every run
def test_three_shards_merged_are_one_unsharded_run(tmp_path) -> None:
    """Three Slurm array tasks of one run, merged with `reports merge`, hold the same records as the run
    unsharded (the exact-count benchmarks: their figures do not depend on timing). The four runs start
    together: they are mostly interpreter start-up."""
    def start(out: Path, env: dict) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bench", "--preset", "smoke", "--only", "kv", "--out", str(out),
                                 "--", "-k", "capacity"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, **env})

    whole = start(tmp_path / "whole", {})
    tasks = {task: start(tmp_path / f"shard{task}", {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3",
                                                       "SLURM_ARRAY_TASK_MIN": "1"}) for task in (1, 2, 3)}
    output, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, output[-2000:]
    parts = []
    for task, proc in tasks.items():
        output, _ = proc.communicate(timeout=600)
        out = tmp_path / f"shard{task}"
        assert f"shard {task}/3" in output and (proc.returncode == 0 or not (out / RESULTS).exists()), output[-2000:]
        if (out / RESULTS).exists():
            parts.append(str(out / RESULTS))
    merged = tmp_path / "merged.json"
    assert subprocess.run([sys.executable, "-m", "reports", "merge", *parts, "--out", str(merged)], cwd=ROOT,
                          timeout=300).returncode == 0

    def records(path: Path) -> dict:
        return {b["name"]: (b["extra_info"]["params"], b["extra_info"]["metrics"]) for b in load(path).benchmarks}

    assert len(parts) >= 2 and records(merged) == records(tmp_path / "whole" / RESULTS)
