"""The results loader, the analysis, the HTML report and the regression check."""

import base64
import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.studies.decode import report as decode_report
from reports import fits
from reports.__main__ import main as reports_main
from reports.build import build_report
from reports.check import check
from reports.load import load, to_frame

SMOKE = Path(__file__).parent / "data" / "smoke_results.json"
STUDIES = Path(__file__).parent / "data" / "studies_results.json"


def _write(tmp_path: Path, name: str, payload: object) -> Path:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_fit_loglog_recovers_exponents() -> None:
    lengths = [32, 64, 128, 256, 512]
    rng = np.random.default_rng(0)
    for exponent in (1.0, 2.0):
        times = [3e-4 * t**exponent * (1 + 0.02 * rng.standard_normal()) for t in lengths]
        fit = fits.fit_loglog(lengths, times)
        assert fit.slope == pytest.approx(exponent, abs=0.03) and 0 < fit.stderr < 0.03 and fit.n == 5
    two = fits.fit_loglog([10, 20], [1.0, 4.0])
    assert two.slope == pytest.approx(2.0) and np.isnan(two.stderr)
    assert fits.upper_half([32, 64, 128, 256, 512]) == [128, 256, 512]


def test_loader_reads_a_real_file() -> None:
    res = load(SMOKE)
    df = to_frame([res])
    assert len(df) == len(res.benchmarks) > 0
    assert {"study", "variant", "backend", "p_cache", "m_kv_bytes", "time_mean"} <= set(df.columns)
    assert res.archbench_info["profile"]["torch"]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], 0

    def handle_starttag(self, tag, attrs):
        self.tags += 1
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_report_is_self_contained_and_escapes_results(tmp_path) -> None:
    data = json.loads(SMOKE.read_text())
    data["machine_info"]["archbench"]["profile"]["cpu_model"] = "<script>alert('cpu')</script>"
    for bench in data["benchmarks"]:
        if bench["extra_info"]["variant"] == "gpt2-tiny":
            bench["extra_info"]["variant"] = "<img src=x onerror=alert(1)>"
    out = build_report([_write(tmp_path, "evil.json", data)], tmp_path / "index.html")
    html = out.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html
    page = _Page()
    page.feed(html)
    assert len(page.images) >= 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html  # works offline


def test_check_passes_on_identical_and_fails_on_doctored(tmp_path, capsys) -> None:
    assert reports_main(["check", "--baseline", str(SMOKE), str(SMOKE)]) == 0
    assert "0 failed" in capsys.readouterr().out
    data = json.loads(SMOKE.read_text())
    for bench in data["benchmarks"]:  # make cached decode grow quadratically
        info = bench["extra_info"]
        if info["params"].get("phase") == "decode" and info["params"]["cache"] == "raw":
            factor = (info["params"]["decode_tokens"] / 8) ** 1.5
            for stat in ("min", "max", "mean", "median"):
                bench["stats"][stat] *= factor
            bench["stats"]["data"] = [t * factor for t in bench["stats"]["data"]]
    doctored = _write(tmp_path, "doctored.json", data)
    assert reports_main(["check", "--baseline", str(SMOKE), str(doctored)]) == 1
    out = capsys.readouterr().out
    assert "FAIL    cached slope" in out
    gates = check(load(SMOKE), load(doctored))
    assert any(g.gate == "cache speed-up" and not g.passed for g in gates)
    # several runs: a gate passes when it passes in any of them (noise), fails when it fails in all
    assert reports_main(["check", "--baseline", str(SMOKE), str(doctored), str(doctored)]) == 1
    assert reports_main(["check", "--baseline", str(SMOKE), str(doctored), str(SMOKE)]) == 0


def _scale_uncached(data: dict, factor: float) -> dict:
    """A copy of `data` with every uncached decode round `factor` times as long (the speed-up x factor)."""
    out = copy.deepcopy(data)
    for bench in out["benchmarks"]:
        params = bench["extra_info"]["params"]
        if params.get("phase") == "decode" and params.get("cache") == "none":
            for stat in ("min", "max", "mean", "median"):
                bench["stats"][stat] *= factor
            bench["stats"]["data"] = [t * factor for t in bench["stats"]["data"]]
    return out


def test_a_baseline_of_several_runs_gates_on_their_median(tmp_path, capsys) -> None:
    data = json.loads(SMOKE.read_text())
    runs = [_write(tmp_path, f"r{f}.json", _scale_uncached(data, f)) for f in (0.5, 1.0, 2.0)]
    # the median run is the smoke run itself: every gate passes, and the limits say how many runs
    gates = check([load(r) for r in runs], load(SMOKE))
    speedups = [g for g in gates if g.gate == "cache speed-up"]
    assert speedups and all(g.passed and "median of 3 runs" in g.limit for g in speedups)
    assert all(g.passed for g in gates)
    # one fast outlier among the runs does not raise the reference; a baseline twice as fast does
    high = [_write(tmp_path, f"h{i}.json", _scale_uncached(data, f)) for i, f in enumerate((2.0, 2.0, 2.0))]
    assert not any(g.passed for g in check([load(r) for r in high], load(SMOKE)) if g.gate == "cache speed-up")
    # a median twice as fast with one baseline run as slow as this one: the run is inside the spread of the
    # baseline code itself, not a regression (the limit is 0.95x the lowest baseline run)
    spread = [_write(tmp_path, f"s{i}.json", _scale_uncached(data, f)) for i, f in enumerate((2.0, 2.0, 1.0))]
    gates = [g for g in check([load(r) for r in spread], load(SMOKE)) if g.gate == "cache speed-up"]
    assert gates and all(g.passed and "lowest baseline run" in g.limit for g in gates)
    # `reports baseline` writes the runs into a directory that `check --baseline` reads
    to = tmp_path / "base"
    assert reports_main(["baseline", *map(str, runs), "--to", str(to)]) == 0
    assert sorted(p.name for p in to.iterdir()) == ["run-1.json", "run-2.json", "run-3.json"]
    assert "median and range over 3 run(s)" in capsys.readouterr().out
    assert reports_main(["check", "--baseline", str(to), str(SMOKE)]) == 0
    # replacing it shows each new run against the old baseline, and leaves no stale run behind
    assert reports_main(["baseline", str(high[0]), str(high[1]), "--to", str(to)]) == 0
    assert "against the old baseline" in capsys.readouterr().out
    assert sorted(p.name for p in to.iterdir()) == ["run-1.json", "run-2.json"]
    assert reports_main(["check", "--baseline", str(to), str(SMOKE)]) == 1
    # several runs cannot go to a .json file; an empty directory is no baseline
    assert reports_main(["baseline", *map(str, runs), "--to", str(tmp_path / "b.json")]) == 2
    assert "a baseline of several runs is a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert reports_main(["check", "--baseline", str(tmp_path / "empty"), str(SMOKE)]) == 2
    assert "no results files" in capsys.readouterr().err
    # the other studies' gates come from the run that measured most of each, wherever it sits
    decode_only = copy.deepcopy(data)
    decode_only["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["study"] == "decode"]
    decode_run = load(_write(tmp_path, "decode.json", decode_only))
    studies = [g for g in check([decode_run, load(STUDIES)], load(STUDIES)) if g.gate != "missing"]
    assert {"kv exact bytes", "int8 accuracy", "positions position_params"} <= {g.gate for g in studies}
    assert all(g.passed for g in studies)


def _with_pairs(data: dict, speedup: float) -> dict:
    """A copy of `data` whose uncached rounds at each group's longest length are paired with cached runs
    `speedup` times shorter."""
    out = copy.deepcopy(data)
    uncached = [b for b in out["benchmarks"] if b["extra_info"]["params"].get("phase") == "decode"
                and b["extra_info"]["params"].get("cache") == "none"]
    longest: dict[tuple, int] = {}
    for b in uncached:
        key = (b["extra_info"]["variant"], b["extra_info"]["backend"])
        longest[key] = max(longest.get(key, 0), b["extra_info"]["params"]["decode_tokens"])
    for b in uncached:
        info = b["extra_info"]
        if info["params"]["decode_tokens"] == longest[(info["variant"], info["backend"])]:
            info["metrics"]["paired_cached_s"] = [t / speedup for t in b["stats"]["data"]]
    return out


def test_the_speed_up_gate_uses_paired_rounds_where_both_runs_have_them(tmp_path) -> None:
    data = json.loads(SMOKE.read_text())
    base = load(_write(tmp_path, "base.json", _with_pairs(data, 5.0)))
    pay = decode_report.cache_payoff(to_frame([base]))
    assert pay["speedup_paired"].to_numpy() == pytest.approx(5.0)
    assert fits.median_ratio([1.0, 2.0, 9.0], [0.5, 1.0, 1.0]) == pytest.approx(2.0)  # the median ratio
    assert np.isnan(fits.median_ratio([1.0], []))
    slower = check(base, load(_write(tmp_path, "slow.json", _with_pairs(data, 3.0))))
    gates = [g for g in slower if g.gate == "cache speed-up"]
    assert gates and all(not g.passed and g.value.endswith("(paired)") for g in gates)
    assert all(g.passed for g in check(base, load(_write(tmp_path, "same.json", _with_pairs(data, 4.5))))
               if g.gate == "cache speed-up")
    # a run without pairs is compared on the fitted curves, like the baseline's own
    unpaired = [g for g in check(base, load(SMOKE)) if g.gate == "cache speed-up"]
    assert unpaired and all(g.passed and g.value.endswith("(fitted)") for g in unpaired)


def test_check_fails_on_different_tokens_and_missing_groups(tmp_path) -> None:
    data = json.loads(SMOKE.read_text())
    for bench in data["benchmarks"]:
        if bench["extra_info"]["params"].get("cache") == "none":
            bench["extra_info"]["metrics"]["tokens_sha1"] = "0" * 16
    gates = check(load(SMOKE), load(_write(tmp_path, "tokens.json", data)))
    assert any(g.gate == "identical tokens" and not g.passed for g in gates)
    data = json.loads(SMOKE.read_text())
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["variant"] != "llama-tiny"]
    gates = check(load(SMOKE), load(_write(tmp_path, "missing.json", data)))
    assert any(g.gate == "missing" and "llama-tiny" in g.subject for g in gates)


def test_merge_joins_runs_of_one_machine_and_refuses_two(tmp_path, capsys) -> None:
    data = json.loads(SMOKE.read_text())
    first, second = copy.deepcopy(data), copy.deepcopy(data)
    first["benchmarks"], second["benchmarks"] = data["benchmarks"][:3], data["benchmarks"][3:]
    second["machine_info"]["archbench"]["ceilings"] = {"cuda": {"read_Bps": 1.0}}
    a, b = _write(tmp_path, "a.json", first), _write(tmp_path, "b.json", second)
    assert reports_main(["merge", str(a), str(b), "--out", str(tmp_path / "m.json")]) == 0
    merged = load(tmp_path / "m.json")
    assert len(merged.benchmarks) == len(data["benchmarks"])
    assert set(merged.archbench_info["ceilings"]) == set(data["machine_info"]["archbench"]["ceilings"]) | {"cuda"}
    second["machine_info"]["archbench"]["label"] = "Another Machine"
    c = _write(tmp_path, "c.json", second)
    assert reports_main(["merge", str(a), str(c), "--out", str(tmp_path / "n.json")]) == 2
    assert "different machines" in capsys.readouterr().err


def _doctor(data: dict, study: str, match: dict, metric: str, change) -> dict:
    """A copy of `data` with `metric` of every record of `study` whose params include `match` changed."""
    out = copy.deepcopy(data)
    hits = 0
    for bench in out["benchmarks"]:
        info = bench["extra_info"]
        if info["study"] == study and all(info["params"].get(k) == v for k, v in match.items()):
            info["metrics"][metric] = change(info["metrics"][metric])
            hits += 1
    assert hits, f"no {study} record matched {match}"
    return out


@pytest.mark.parametrize(
    ("gate", "study", "match", "metric", "change"),
    [
        ("kv exact bytes", "kv_memory", {"phase": "capacity"}, "bytes_per_token",
         lambda m: {**m, "tq3": m["tq3"] + 2}),
        ("kv accuracy", "kv_accuracy", {"cache": "tq3"}, "kl_mean_nats", lambda v: v * 2),
        ("int8 accuracy", "int8", {"scheme": "w8a8", "norms": "keep"}, "kl_mean_nats", lambda v: v * 3),
        ("int8 layer size", "int8", {"scheme": "weight_only"}, "quantized_weights_bytes", lambda v: v * 2),
        ("int8 norm policy", "int8", {"scheme": "w8a8", "norms": "quantize"}, "kl_mean_nats", lambda v: v / 10),
        ("lora variance slope", "lora", {"phase": "variance", "scaling": "rslora"}, "loglog_slope", lambda v: -0.5),
        ("rslora at the top rank", "lora", {"phase": "finetune", "scaling": "rslora"}, "final_train_bpb",
         lambda v: v + 1.0),
        ("positions position_params", "positions", {"phase": "params", "pos": "rope"}, "position_params",
         lambda v: 1024),
        ("learned positions refuse past the table", "positions", {"phase": "extrapolation", "pos": "learned"},
         "by_length", lambda m: {k: {"bits_per_byte": 3.0} for k in m}),
        ("gradient trend at init", "norms", {"phase": "gradients", "init": "xavier", "norm": "post_ln"},
         "last_over_first", lambda v: 0.5),
        ("stability", "norms", {"phase": "stability"}, "failed", lambda v: not v),  # Pre-LN fails, Post-LN not
        ("tying tied_params", "tying", {"phase": "params"}, "tied_params", lambda v: v + 1),
    ],
)
def test_study_gates_fail_on_doctored_results(tmp_path, gate, study, match, metric, change) -> None:
    data = json.loads(STUDIES.read_text())
    base = load(_write(tmp_path, "base.json", data))
    same = check(base, load(_write(tmp_path, "same.json", data)))
    assert all(g.passed for g in same), [g for g in same if not g.passed]
    assert any(g.gate == gate for g in same)
    doctored = check(base, load(_write(tmp_path, "bad.json", _doctor(data, study, match, metric, change))))
    failed = {g.gate for g in doctored if not g.passed}
    assert gate in failed, failed


def test_a_study_missing_from_the_run_fails(tmp_path) -> None:
    data = json.loads(STUDIES.read_text())
    without = copy.deepcopy(data)
    without["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["study"] != "lora"]
    gates = check(load(_write(tmp_path, "b.json", data)), load(_write(tmp_path, "c.json", without)))
    assert any(g.gate == "missing" and g.subject == "lora study" and not g.passed for g in gates)


def test_time_gate_leaves_out_training_and_accuracy_work(tmp_path) -> None:
    """A training benchmark served from the disk cache in one run and trained in another differs by
    100x in time: that is not a regression, and the time gate does not look at it."""
    data = json.loads(STUDIES.read_text())
    slow = copy.deepcopy(data)
    for bench in slow["benchmarks"]:
        if bench["extra_info"]["study"] in ("positions", "tying", "lora", "norms", "kv_accuracy"):
            for key in ("min", "max", "mean", "median"):
                bench["stats"][key] = bench["stats"][key] * 100 if key in bench["stats"] else None
    gates = check(load(_write(tmp_path, "b.json", data)), load(_write(tmp_path, "s.json", slow)))
    timed = [g for g in gates if g.gate == "time"]
    assert timed and all(g.passed for g in timed if "extrapolation" in g.subject or "quality" in g.subject)
    assert not any("test_position_extrapolation" in g.subject for g in timed)
    assert any(not g.passed for g in timed)  # the timed ones (norm and position speed) are still gated


def test_combined_runs_count_a_study_as_missing_only_when_every_run_missed_it(tmp_path) -> None:
    from reports.check import combine

    data = json.loads(STUDIES.read_text())
    decode_only = copy.deepcopy(data)
    decode_only["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["study"] == "kv_memory"]
    base = load(_write(tmp_path, "b.json", data))
    full, partial = check(base, load(_write(tmp_path, "f.json", data))), check(base, load(_write(tmp_path, "p.json",
                                                                                                   decode_only)))
    assert any(g.gate == "missing" for g in partial)
    assert all(g.passed for g in combine([full, partial]))  # the re-measurement of one study misses the others
    assert any(g.gate == "missing" and not g.passed for g in combine([partial, partial]))


def test_committed_samples_and_baselines_of_the_old_schema_still_load_build_and_check(tmp_path) -> None:
    """Files written before records named their backend's family (schema 1), with the weight layouts of the
    archbench of that time, load (family and device type from the backend registry), build and check."""
    root = Path(__file__).parent.parent / "reports"
    samples = sorted((root / "samples").glob("*/results.json"))
    old = [p for p in samples if json.loads(p.read_text())["benchmarks"][0]["extra_info"]["schema"] == 1]
    for path in [*old, SMOKE]:
        df = to_frame([load(path)])
        known = df[df["backend"].isin(["torch-cpu", "torch-cuda", "onnxruntime"])]
        assert set(known["backend_family"]) <= {"torch", "onnxruntime"} and known["device_type"].notna().all()
        html = build_report([path], tmp_path / f"{path.parent.name}.html").read_text()
        assert "could not be built" not in html and 'id="decode"' in html
    assert reports_main(["check", "--baseline", str(SMOKE), str(SMOKE)]) == 0


def _decode_only(tmp_path: Path, data: dict) -> Path:
    """`data` with its decode benchmarks only, written to a file (the report builds in seconds, not tens)."""
    kept = dict(data, benchmarks=[b for b in data["benchmarks"] if b["extra_info"]["study"] == "decode"])
    return _write(tmp_path, "decode-only.json", kept)


def test_decode_targets_are_judged_from_the_measured_figures(tmp_path, unrasterised_figures) -> None:
    sample = Path(__file__).parent.parent / "reports" / "samples" / "cpu-amd-epyc-2core-quick" / "results.json"
    data = json.loads(sample.read_text())  # a real quick run: GPT-2 124M on torch-cpu and onnxruntime
    for bench in data["benchmarks"]:  # this test judges against the session's ceiling: no probes
        for key in ("ceiling_before_Bps", "ceiling_after_Bps"):
            bench["extra_info"].get("metrics", {}).pop(key, None)
    df = to_frame([load(_write(tmp_path, "studies.json", data))])
    targets = decode_report.decode_targets(df)
    rows = decode_report.decode_rows(df)
    cached = rows[(rows["variant"] == "gpt2-small") & (rows["p_cache"] == "raw") & (rows["backend"] == "torch-cpu")]
    assert not cached.empty
    fraction = float(cached["bandwidth_fraction"].median())
    row = targets[(targets["backend"] == "torch-cpu") & targets["target"].str.contains("ceiling")].iloc[0]
    assert row["met"] == (fraction >= 0.70) and row["measured"].startswith(f"{fraction:.0%}")
    # the same file with every cached round 10x faster meets the bandwidth target
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info["variant"] == "gpt2-small" and info["params"].get("cache") == "raw":
            for key in ("min", "max", "mean", "median"):
                bench["stats"][key] /= 10
            bench["stats"]["data"] = [t / 10 for t in bench["stats"].get("data") or []]
    faster = decode_report.decode_targets(to_frame([load(_write(tmp_path, "faster.json", data))]))
    assert faster[(faster["backend"] == "torch-cpu") & faster["target"].str.contains("ceiling")]["met"].all()
    html = build_report([_decode_only(tmp_path, data)], tmp_path / "index.html").read_text()
    assert "Targets: gpt2-small, fp32, batch 1, on the CPU" in html


def _gpt2_small_cached(data: dict):
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info["variant"] == "gpt2-small" and info["params"].get("cache") == "raw" \
                and info["params"].get("phase") == "decode":
            yield bench


def test_targets_use_the_ceiling_probed_beside_each_round(tmp_path, unrasterised_figures) -> None:
    sample = Path(__file__).parent.parent / "reports" / "samples" / "cpu-amd-epyc-2core-quick" / "results.json"
    data = json.loads(sample.read_text())
    expected = {}
    for bench in _gpt2_small_cached(data):
        rounds = bench["stats"]["data"]
        metrics = bench["extra_info"]["metrics"]
        ceiling = metrics["ceiling_Bps"]
        # the machine was slower around each round than when the session's ceiling was measured: half as
        # fast before the round, three quarters as fast after it, so the probed ceiling is 5/8 of it
        metrics["ceiling_before_Bps"] = [ceiling / 2] * len(rounds)
        metrics["ceiling_after_Bps"] = [ceiling * 3 / 4] * len(rounds)
        per_round = sorted(metrics["bytes_read"] / t / (ceiling * 5 / 8) for t in rounds)
        key = (bench["extra_info"]["backend"], bench["extra_info"]["params"]["decode_tokens"])
        expected[key] = per_round[len(per_round) // 2] if len(per_round) % 2 else \
            (per_round[len(per_round) // 2 - 1] + per_round[len(per_round) // 2]) / 2
    assert expected
    rows = decode_report.decode_rows(to_frame([load(_write(tmp_path, "probed.json", data))]))
    cached = rows[(rows["variant"] == "gpt2-small") & (rows["p_cache"] == "raw")]
    for r in cached.itertuples():
        assert r.probed_fraction == pytest.approx(expected[(r.backend, r.p_decode_tokens)])
        assert r.probed_ceiling_Bps == pytest.approx(r.m_ceiling_Bps * 5 / 8)
        assert r.probed_fraction > r.bandwidth_fraction  # a slower moment: a lower ceiling to compare with
    targets = decode_report.decode_targets(to_frame([load(tmp_path / "probed.json")]))
    row = targets[(targets["backend"] == "torch-cpu") & targets["target"].str.contains("ceiling")].iloc[0]
    torch_fraction = float(cached[cached["backend"] == "torch-cpu"]["probed_fraction"].median())
    assert "probed beside each round" in row["target"] and row["measured"].startswith(f"{torch_fraction:.0%}")
    assert row["met"] == (torch_fraction >= 0.70) and "of the session's ceiling" in row["measured"]
    html = build_report([_decode_only(tmp_path, data)], tmp_path / "index.html").read_text()
    assert "ceiling probed beside rounds" in html and "of the ceiling probed beside its rounds" in html
    # a probe list that does not match the rounds is not used: the session's ceiling judges instead
    for bench in _gpt2_small_cached(data):
        bench["extra_info"]["metrics"]["ceiling_after_Bps"].pop()
    rows = decode_report.decode_rows(to_frame([load(_write(tmp_path, "short.json", data))]))
    assert rows[(rows["variant"] == "gpt2-small") & (rows["p_cache"] == "raw")]["probed_fraction"].isna().all()
    targets = decode_report.decode_targets(to_frame([load(tmp_path / "short.json")]))
    assert not targets["target"].str.contains("probed").any()


def test_peer_table_gives_the_ratio_on_each_engine(tmp_path, unrasterised_figures) -> None:
    data = json.loads(SMOKE.read_text())
    decode = next(b for b in data["benchmarks"] if b["extra_info"]["study"] == "decode"
                  and b["extra_info"]["params"].get("phase") == "decode")
    peers = []
    for impl, seconds in (("archbench", 0.5), ("transformers", 0.8)):
        bench = copy.deepcopy(decode)
        bench["name"] = bench["fullname"] = f"test_peer[{impl}]"
        bench["stats"].update(min=seconds, max=seconds, mean=seconds, median=seconds, data=[seconds])
        bench["extra_info"]["params"] = {"phase": "peer", "impl": impl, "cache": "raw", "decode_tokens": 32,
                                         "prompt_tokens": 16, "batch": 1, "dtype": "fp32"}
        bench["extra_info"]["metrics"] = {"tokens_identical": True, "tokens_sha1": "x"}
        peers.append(bench)
    data["benchmarks"] += peers
    path = _write(tmp_path, "peers.json", data)
    p = decode_report.peers(to_frame([load(path)]))
    assert len(p) == 1 and p["ratio"].iloc[0] == pytest.approx(0.8 / 0.5) and p["device_type"].iloc[0] == "cpu"
    html = build_report([path], tmp_path / "index.html").read_text()
    assert "archbench vs transformers (same weights, same engine, greedy)" in html and "1.60x" in html


def test_summary_gives_the_scoreboard_figures_and_gates_as_markdown_and_csv(tmp_path, capsys) -> None:
    """`reports summary`: a Markdown table per part (claims, key figures with units and direction, gates
    with failures first) and one CSV with fixed columns; a failed gate shows as FAIL in both."""
    import csv

    from reports.summary import CSV_COLUMNS

    data = json.loads(SMOKE.read_text())
    for bench in data["benchmarks"]:
        if bench["extra_info"]["params"].get("cache") == "none":
            bench["extra_info"]["metrics"]["tokens_sha1"] = "0" * 16  # fails the identical-tokens gate
    doctored = _write(tmp_path, "doctored.json", data)
    assert reports_main(["summary", str(SMOKE), str(STUDIES)]) == 0
    md = capsys.readouterr().out
    assert "### Claims on this hardware" in md and "### Key figures" in md and "Regression gates" not in md
    assert "| claim | machine | verdict | figures | judged on |" in md  # two files of two machines: a column
    assert "| x | bigger |" in md and "| slope | smaller |" in md and "| nats | smaller |" in md
    assert reports_main(["summary", str(doctored), "--baseline", str(SMOKE)]) == 0
    md = capsys.readouterr().out
    gates = md[md.index("### Regression gates"):]
    first_row = gates.splitlines()[4]
    assert "failed" in gates.splitlines()[0] and first_row.startswith("| identical tokens") and "FAIL" in first_row
    out = tmp_path / "summary.csv"
    assert reports_main(["summary", str(doctored), "--baseline", str(SMOKE), "--format", "csv", "--out",
                         str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS and {r["table"] for r in rows} == {"claim", "figure", "gate"}
    assert any(r["table"] == "gate" and r["result"] == "FAIL" and r["item"].startswith("identical tokens")
               for r in rows)
    assert all(float(r["value"]) == float(r["value"]) for r in rows if r["table"] == "figure")


def test_history_orders_runs_by_commit_and_writes_action_json_and_plots(tmp_path, capsys) -> None:
    """`reports history`: one point per results file, ordered by its commit's time (not by argument order),
    in github-action-benchmark's data format (a suite per direction, custom benches) and as trend plots."""
    old, new = json.loads(SMOKE.read_text()), json.loads(SMOKE.read_text())
    old["commit_info"] = {"id": "a" * 40, "time": "2026-01-01T10:00:00+00:00", "dirty": False, "branch": "main"}
    new["commit_info"] = {"id": "b" * 40, "time": "2026-02-01T10:00:00+00:00", "dirty": True, "branch": "main"}
    for bench in new["benchmarks"]:  # the newer commit decodes twice as fast
        if bench["extra_info"]["params"].get("phase") == "decode":
            bench["stats"] = {k: (v / 2 if k in ("min", "max", "mean", "median") else v)
                              for k, v in bench["stats"].items()}
            bench["stats"]["data"] = [t / 2 for t in bench["stats"]["data"]]
    paths = [_write(tmp_path, "new.json", new), _write(tmp_path, "old.json", old)]
    assert reports_main(["history", *map(str, paths), "--out", str(tmp_path / "h.json")]) == 0
    doc = json.loads((tmp_path / "h.json").read_text())
    bigger = doc["entries"]["archbench (bigger is better)"]
    assert [run["commit"]["id"] for run in bigger] == ["a" * 40, "b" * 40]
    assert {run["tool"] for run in bigger} == {"customBiggerIsBetter"}
    assert {run["tool"] for run in doc["entries"]["archbench (smaller is better)"]} == {"customSmallerIsBetter"}
    speed = [{b["name"]: b["value"] for b in run["benches"]} for run in bigger]
    name = next(n for n in speed[0] if n.startswith("decode largest cache speed-up"))
    assert all({"name", "value", "unit"} <= set(b) for run in bigger for b in run["benches"])
    assert name in speed[1]
    assert reports_main(["history", *map(str, paths), "--out", str(tmp_path / "h.html")]) == 0
    page = (tmp_path / "h.html").read_text()
    assert "bbbbbbbb+" in page and page.index("aaaaaaaa") < page.index("bbbbbbbb+")
    assert page.count("data:image/png;base64,") == len({b["name"] for e in doc["entries"].values() for run in e
                                                        for b in run["benches"]})
    capsys.readouterr()
    assert reports_main(["history", str(paths[0]), "--out", str(tmp_path / "h.txt")]) == 2
    assert "give a .json" in capsys.readouterr().err
