"""`python -m reports build RESULTS.json... --out FILE`; `python -m reports check --baseline BASE.json RESULTS.json`;
`python -m reports baseline RESULTS.json --to BASE.json`; `python -m reports merge RESULTS.json... --out FILE`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .load import ResultsFileError, load, merge


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
    base = sub.add_parser("baseline", help="make a run the new baseline, showing the gates it is accepted with")
    base.add_argument("results", type=Path)
    base.add_argument("--to", required=True, type=Path, help="baseline file to write")
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
        from .check import check as run_check
        from .check import combine, format_table

        if args.command == "check":
            baseline = load(args.baseline)
            gates = combine([run_check(baseline, load(path)) for path in args.results])
            print(format_table(gates))
            failed = [g for g in gates if not g.passed]
            print(f"\n{len(gates) - len(failed)} gates passed, {len(failed)} failed")
            return 1 if failed else 0
        current = load(args.results)
        if args.to.exists():
            gates = run_check(load(args.to), current)
            print("The new baseline against the old one (differences it accepts):")
            print(format_table(gates))
        shutil.copyfile(args.results, args.to)
        print(f"wrote baseline {args.to}")
        return 0
    except ResultsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
