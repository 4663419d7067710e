"""`python -m reports build RESULTS.json... --out FILE`; `python -m reports check --baseline BASE.json RESULTS.json`;
`python -m reports baseline RESULTS.json... --to BASE`; `python -m reports merge RESULTS.json... --out FILE`;
`python -m reports summary RESULTS.json... [--baseline B] [--format md|csv]`;
`python -m reports history RESULTS.json... --out history.json|history.html`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .load import ResultsFileError, load, load_baseline, merge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="results files -> one HTML report")
    build.add_argument("results", nargs="+", type=Path)
    build.add_argument("--out", required=True, type=Path)
    check = sub.add_parser("check", help="regression gates of a run against a baseline; exit 1 on a failure")
    check.add_argument("--baseline", required=True, type=Path)
    check.add_argument("results", type=Path, nargs="+",
                       help="one run, or several runs of the same code (a gate passes if it passes in any)")
    merged = sub.add_parser("merge", help="merge several results files of one machine (studies or shards run "
                            "apart) into one")
    merged.add_argument("results", nargs="+", type=Path)
    merged.add_argument("--out", required=True, type=Path)
    base = sub.add_parser("baseline", help="make one run, or several runs of the same code, the new baseline, "
                          "showing the gates it is accepted with and the spread of its reference figures")
    base.add_argument("results", type=Path, nargs="+")
    base.add_argument("--to", required=True, type=Path,
                      help="the baseline to write: a .json file (one run) or a directory (its runs, run-N.json)")
    summary = sub.add_parser("summary", help="the scoreboard, key figures and (with --baseline) the gates as Markdown "
                             "or CSV, for a CI job summary or a pull-request comment")
    summary.add_argument("results", type=Path, nargs="+")
    summary.add_argument("--baseline", type=Path, help="a baseline file or directory: add the regression gates")
    summary.add_argument("--format", choices=("md", "csv"), default="md")
    summary.add_argument("--out", type=Path, help="write here instead of standard output")
    history = sub.add_parser("history", help="key figures across commits: github-action-benchmark JSON or a page "
                             "of trend plots")
    history.add_argument("results", type=Path, nargs="+", help="results files of runs of different commits")
    history.add_argument("--out", required=True, type=Path, help="history.json or history.html")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            from .build import build_report

            out = build_report(args.results, args.out)
            print(f"wrote {out}")
            return 0
        if args.command == "merge":
            doc = merge(args.results)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(doc, indent=1))
            print(f"wrote {args.out} ({len(doc['benchmarks'])} benchmarks from {len(args.results)} files)")
            return 0
        if args.command == "history":
            from .history import write_history

            print(f"wrote {write_history(args.results, args.out)}")
            return 0
        from .check import check as run_check
        from .check import combine, format_table

        if args.command == "summary":
            from .summary import to_csv, to_markdown

            runs = [load(path) for path in args.results]
            gates = None
            if args.baseline is not None:
                baseline = load_baseline(args.baseline)
                gates = combine([run_check(baseline, run) for run in runs])
            text = (to_markdown if args.format == "md" else to_csv)(runs, gates)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0

        if args.command == "check":
            baseline = load_baseline(args.baseline)
            gates = combine([run_check(baseline, load(path)) for path in args.results])
            print(format_table(gates))
            failed = [g for g in gates if not g.passed]
            print(f"\n{len(gates) - len(failed)} gates passed, {len(failed)} failed")
            return 1 if failed else 0
        return _write_baseline(args.results, args.to)
    except ResultsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _write_baseline(paths: list[Path], to: Path) -> int:
    """Replace the baseline at `to` by the runs at `paths`, after showing how each run fares against the
    old baseline and how far the new baseline's runs spread."""
    from .check import baseline_figures, format_table
    from .check import check as run_check
    from .load import to_frame

    runs = [load(p) for p in paths]
    contents = [Path(p).read_bytes() for p in paths]  # read before anything is written: an input may be replaced
    as_directory = len(runs) > 1 or to.is_dir() or to.suffix != ".json"
    if as_directory and (to.is_file() or to.suffix == ".json"):
        raise ResultsFileError(f"{to}: a baseline of several runs is a directory, not a .json file; give a "
                               "path without .json")
    if to.exists():
        old = load_baseline(to)
        for path, run in zip(paths, runs, strict=True):
            gates = run_check(old, run)
            failed = [g for g in gates if not g.passed]
            print(f"{path} against the old baseline: {len(gates) - len(failed)} gates pass, {len(failed)} fail"
                  + (" (differences the new baseline accepts):" if failed else ""))
            if failed:
                print(format_table(failed))
    rows = baseline_figures([to_frame([r]) for r in runs])
    if rows:
        print(f"reference figures of the new baseline (median and range over {len(runs)} run(s)):")
        print("\n".join(f"  {row}" for row in rows))
    if as_directory:  # only the runs are replaced (other files in the directory stay), each file atomically
        to.mkdir(parents=True, exist_ok=True)
        names = [f"run-{i}.json" for i in range(1, len(contents) + 1)]
        for name, data in zip(names, contents, strict=True):
            _write_atomically(to / name, data)
        for stale in to.glob("run-*.json"):
            if stale.name not in names:
                stale.unlink()
    else:
        to.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(to, contents[0])
    print(f"wrote baseline {to} ({len(runs)} run(s))")
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path`, through a temporary file renamed over it (a reader sees the old file or the new)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
