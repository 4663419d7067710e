"""`python -m bench --preset quick|standard|full [--only STUDY] [--backend NAME] --out DIR`.

Runs the benchmark suites under pytest-benchmark, writes DIR/results.json (pytest-benchmark's JSON
with archbench records) and DIR/index.html. Records are appended to DIR/records.jsonl as they are
measured, so a crash, a kill or Ctrl-C keeps what was measured: results.json is then rebuilt from them.
The arguments are validated here, once (`bench.run.validate`); the suites run in a worker process that
receives that configuration, so that an engine crashing mid-run cannot take the report with it.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

from bench import backends, presets, studies
from bench.run import ROOT, ConfigError, OutputLock, RunConfig, finish, prepare_out, validate


def parse_args(argv: list[str] | None = None) -> RunConfig:
    """The command line as a validated RunConfig; a bad argument exits with status 2 and says why."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", help=f"one of: {', '.join(presets.PRESETS)} (default quick)")
    parser.add_argument("--only", action="append", default=None, metavar="STUDY",
                        help=f"run only this study (repeatable, or comma-separated): {', '.join(studies.STUDIES)}")
    parser.add_argument("--backend", action="append", default=None, metavar="NAME",
                        help=f"run only this backend (repeatable, or comma-separated): {', '.join(backends.BACKENDS)}")
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
        return validate(preset=args.preset, studies=args.only, backends=args.backend, weights=args.weights,
                        shard=args.shard, out=args.out, pytest_args=args.pytest_args)
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def _exit_status(returncode: int) -> int:
    """A worker's return code as a shell would give it: 128 + N for a worker killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        with OutputLock(config.out_dir):
            return _run(config)
    except ConfigError as exc:  # another run holds the output directory
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(config: RunConfig) -> int:
    """Start the worker on `config` (its outputs prepared) and finish the run with its exit status."""
    config_file = prepare_out(config)
    shard = f", shard {config.shard[0]}/{config.shard[1]}" if config.shard else ""
    print(f"archbench: preset {config.preset!r}, studies {', '.join(config.study_names())}{shard} -> {config.out}",
          flush=True)
    worker = subprocess.Popen([sys.executable, "-m", "bench.run", str(config_file)], cwd=ROOT)
    try:
        code = worker.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the worker too; let it write what it can
        try:
            code = worker.wait(timeout=60)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            worker.send_signal(signal.SIGKILL)
            code = worker.wait()
    return finish(config, _exit_status(code))


if __name__ == "__main__":
    sys.exit(main())
