"""`python -m bench --preset quick|standard|full [--only STUDY] [--backend NAME] --out DIR`.

Runs the benchmark suites under pytest-benchmark, writes DIR/results.json (pytest-benchmark's JSON
with archbench records) and DIR/index.html. Records are appended to DIR/records.jsonl as they are
measured, so a crash or Ctrl-C keeps what was measured: results.json is then rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import backends, presets

ROOT = Path(__file__).resolve().parent.parent
STUDIES = {"decode": "bench/test_decode.py", "kv": "bench/test_kv_cache.py",  # study -> suite
           "int8": "bench/test_int8.py", "lora": "bench/test_lora.py", "positions": "bench/test_positions.py",
           "norms": "bench/test_norms.py", "tying": "bench/test_tying.py"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", help=f"one of: {', '.join(presets.PRESETS)} (default quick)")
    parser.add_argument("--only", action="append", default=None, metavar="STUDY",
                        help=f"run only this study (repeatable): {', '.join(STUDIES)}")
    parser.add_argument("--backend", action="append", default=None, metavar="NAME",
                        help=f"run only this backend (repeatable): {', '.join(backends.BACKENDS)}")
    parser.add_argument("--weights", default=None,
                        help="local transformers GPT-2 or Llama checkpoint directory with its tokenizer: the peer "
                        "comparison and the accuracy studies (KV cache, INT8) use it")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="run shard K of N of the benchmarks (merge the shards' results.json with "
                             "`python -m reports merge`)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (results.json, index.html)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    try:
        presets.get(args.preset)
        for name in args.backend or []:
            backends.get(name)
    except ValueError as exc:
        parser.error(str(exc))
    for study in args.only or []:
        if study not in STUDIES:
            parser.error(f"unknown study {study!r}; valid names: {', '.join(STUDIES)}")
    if args.backend:
        reasons = {name: backends.get(name).unavailable_reason() for name in args.backend}
        if all(reasons.values()):  # nothing could run: say why now rather than after a run of skips
            parser.error("no requested backend is available here: "
                         + "; ".join(f"{name}: {why}" for name, why in reasons.items()))
    return args


def rebuild_from_records(records: Path, results: Path) -> int:
    """Write `results` in pytest-benchmark's JSON shape from the JSON-lines records; returns the count."""
    machine_info: dict = {}
    benchmarks = []
    for line in records.read_text().splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by the crash: everything before it is intact
        if "machine_info" in item:
            machine_info = item["machine_info"]
        elif "benchmark" in item:
            benchmarks.append(item["benchmark"])
    payload = {"machine_info": machine_info, "commit_info": {}, "benchmarks": benchmarks,
               "datetime": None, "version": None, "archbench_partial": True}
    results.write_text(json.dumps(payload, indent=1))
    return len(benchmarks)


def _complete(results: Path) -> bool:
    """Whether pytest-benchmark finished writing `results` (a crash or an interrupt can leave it empty)."""
    try:
        return bool(json.loads(results.read_text()).get("benchmarks") is not None)
    except (OSError, ValueError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results, records, report = out / "results.json", out / "records.jsonl", out / "index.html"
    if results.exists():
        results.unlink()  # never mistake an older run's file for this one's
    suites = [STUDIES[s] for s in (args.only or STUDIES)]
    cmd = [sys.executable, "-m", "pytest", *suites, "-p", "no:cacheprovider", "-q", "-rs",
           "--rootdir", str(ROOT), "--preset", args.preset, "--records", str(records.resolve()),
           f"--benchmark-json={results.resolve()}", "--benchmark-columns=mean,stddev,rounds",
           "--benchmark-sort=fullname"]
    for name in args.backend or []:
        cmd += ["--backend", name]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.shard:
        cmd += ["--shard", args.shard]
    cmd += args.pytest_args
    print(f"archbench: preset {args.preset!r}, studies {', '.join(args.only or STUDIES)} -> {out}", flush=True)
    preset = presets.get(args.preset)
    studies = args.only or STUDIES
    references = {s.reference for s in preset.kv_accuracy if "kv" in studies}
    references |= {s.reference for s in preset.int8 if "int8" in studies}
    references |= {s.reference for s in preset.lora if "lora" in studies}
    for variant in sorted(references):
        # train (or load) the reference model here, where its progress bar is visible; pytest reuses the cache
        from models.reference import reference_model

        result = reference_model(variant, progress=True)
        state = "loaded from the cache" if result.from_cache else f"trained in {result.seconds:.0f} s"
        print(f"archbench: reference model {variant} {state}: {result.val_bits_per_byte:.3f} bits/byte "
              f"on held-out files (unigram {result.unigram_bits_per_byte:.3f})", flush=True)
    try:
        code = subprocess.call(cmd, cwd=ROOT)
    except KeyboardInterrupt:
        code = 130
    if not _complete(results):  # interrupted, or nothing ran: pytest-benchmark never wrote the file
        n = rebuild_from_records(records, results) if records.exists() else 0
        if n == 0:
            why = (": every benchmark was skipped or deselected (the skip reasons are listed above)"
                   if code in (0, 5) else f" (pytest exit {code})")
            print(f"archbench: nothing was measured{why}", file=sys.stderr)
            return code or 1
        print(f"archbench: the run ended early (exit {code}); {n} measured records kept in {results}", flush=True)
    from reports.build import build_report
    from reports.load import ResultsFileError

    try:
        build_report([results], report)
    except ResultsFileError as exc:  # nothing measured (every benchmark skipped): say so, no traceback
        print(f"archbench: no report written: {exc}", file=sys.stderr)
        return code or 1
    print(f"archbench: wrote {results} and {report}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
