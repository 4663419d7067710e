"""The one loader of pytest-benchmark JSON: validates files and turns records into a tidy DataFrame.

No other code knows the JSON shape. One row per benchmark: the machine, the record's study,
variant, backend (with its family and device type), its params (`p_*`) and metrics (`m_*`, nested
dicts kept as objects), and the timing statistics pytest-benchmark measured (`time_*`, seconds).

Record schemas: 2 (this archbench) and 1 (before records named the backend's family and device
type: those come from the backend registry, by the backend's name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SCHEMA = 2  # the record schema this archbench writes
READABLE_SCHEMAS = (1, 2)
STAT_FIELDS = ("min", "max", "mean", "stddev", "median", "iqr", "rounds")
# The time every derived figure uses unless a study says otherwise: the fastest round. Noise on a shared
# machine only ever adds time, so the minimum is the most repeatable of pytest-benchmark's statistics.
TIME = "time_min"


class ResultsFileError(ValueError):
    """A results file that is missing, corrupt, empty or not archbench's; the message names the file."""


@dataclass(frozen=True)
class Results:
    """One results file: its machine info and its archbench benchmarks."""

    path: Path
    machine_info: dict
    benchmarks: list[dict]
    partial: bool  # rebuilt from records after a run ended early

    @property
    def archbench_info(self) -> dict:
        return self.machine_info.get("archbench", {})

    @property
    def machine(self) -> str:
        """A label for the machine (first GPU or CPU model)."""
        return self.archbench_info.get("label") or self.machine_info.get("node") or self.path.stem


def results_from_records(path: str | Path) -> dict:
    """A results document in pytest-benchmark's shape, marked partial, from the JSON-lines records a run
    appends as it measures (`records.jsonl`): what survives a run killed before pytest-benchmark wrote its
    file. A last line cut short by the kill is dropped; everything before it is intact. The provenance
    (commit_info, datetime, pytest-benchmark's version) comes from the last machine line, as the file's would."""
    machine_info: dict = {}
    provenance: dict = {"commit_info": {}, "datetime": None, "version": None}
    benchmarks = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(item, dict) and isinstance(item.get("machine_info"), dict):
            machine_info = item["machine_info"]
            provenance.update({key: item[key] for key in provenance if key in item})
        elif isinstance(item, dict) and "benchmark" in item:
            benchmarks.append(item["benchmark"])
    return {"machine_info": machine_info, **provenance, "benchmarks": benchmarks, "archbench_partial": True}


def load(path: str | Path) -> Results:
    """Read and validate one pytest-benchmark JSON file holding archbench records, or the records of a run
    (`records.jsonl`, read as a partial run)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"{path}: no such results file")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise ResultsFileError(f"{path}: the file is empty")
    try:
        data = results_from_records(path) if path.suffix == ".jsonl" else json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ResultsFileError(f"{path}: not a pytest-benchmark results file (no 'benchmarks' list)")
    if not isinstance(data.get("machine_info"), dict):
        raise ResultsFileError(f"{path}: not a pytest-benchmark results file (no 'machine_info')")
    ours, declared = [], _declared_fields()
    for i, bench in enumerate(data["benchmarks"]):
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(info, dict) or "schema" not in info:
            continue  # a benchmark of someone else's suite: not ours to read
        if info["schema"] not in READABLE_SCHEMAS:
            raise ResultsFileError(f"{path}: benchmark {i} has record schema {info['schema']!r}; "
                                   f"this archbench reads schemas {', '.join(map(str, READABLE_SCHEMAS))}")
        for key in ("study", "variant", "backend", "params", "metrics"):
            if key not in info:
                raise ResultsFileError(f"{path}: benchmark {i} ({bench.get('name')}) record lacks {key!r}")
        for key in ("params", "metrics"):
            if not isinstance(info[key], dict):
                raise ResultsFileError(f"{path}: benchmark {i} ({bench.get('name')}) record's {key!r} is "
                                       f"{type(info[key]).__name__}, not an object")
        problem = _field_problem(info, declared)
        if problem:
            raise ResultsFileError(f"{path}: benchmark {i} ({bench.get('name')}) record's {problem}")
        if not isinstance(bench.get("stats"), dict) or "mean" not in bench["stats"]:
            raise ResultsFileError(f"{path}: benchmark {i} ({bench.get('name')}) has no timing stats")
        ours.append(bench)
    if not ours:
        what = "no benchmarks" if not data["benchmarks"] else "no archbench records (a foreign suite's file?)"
        raise ResultsFileError(f"{path}: {what}")
    return Results(path, data["machine_info"], ours, bool(data.get("archbench_partial")))


def _declared_fields() -> dict[str, dict[str, tuple]]:
    """Record study -> field -> the types its study's record dataclasses declare (registered studies)."""
    from bench import studies

    return {record: study.field_types() for study in studies.STUDIES.values() for record in study.records}


def _field_problem(info: dict, declared: dict[str, dict[str, tuple]]) -> str | None:
    """What is wrong with a record's params and metrics against its study's declared fields (None: nothing;
    fields a study does not declare, and records of studies not registered here, are not checked)."""
    from bench.study import conforms, type_name

    fields = declared.get(info["study"], {})
    for part in ("params", "metrics"):
        for name, value in info[part].items():
            hints = fields.get(name)
            if hints and not any(conforms(value, hint) for hint in hints):
                want = " or ".join(type_name(h) for h in hints)
                return f"{part}.{name} is {json.dumps(value)[:60]} ({type(value).__name__}), not {want}"
    return None


def load_baseline(path: str | Path) -> list[Results]:
    """A baseline: one results file, or a directory of results files (several runs of the same code:
    its `run-*.json` as `reports baseline` writes them, or else every `*.json`, in name order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.json")) or sorted(path.glob("*.json"))
        if not files:
            raise ResultsFileError(f"{path}: a baseline directory with no results files (*.json) in it")
        return [load(f) for f in files]
    return [load(path)]


def merge(paths: list[str | Path]) -> dict:
    """One results document from several runs of the same machine (studies run apart, shards of one
    matrix): every benchmark of every file, the first file's machine info with every file's measured
    ceilings. Each file is validated by `load` first."""
    loaded = [load(p) for p in paths]
    raw = [json.loads(Path(p).read_text()) for p in paths]
    labels = {r.machine for r in loaded}
    if len(labels) > 1:
        raise ResultsFileError(f"cannot merge runs of different machines ({', '.join(sorted(labels))}); "
                               "build one report from the separate files instead")
    machine_info = json.loads(json.dumps(raw[0]["machine_info"]))  # a deep copy
    ceilings = machine_info.setdefault("archbench", {}).setdefault("ceilings", {})
    for doc in raw:
        ceilings.update(doc["machine_info"].get("archbench", {}).get("ceilings") or {})
    return {**raw[0], "machine_info": machine_info, "benchmarks": [b for doc in raw for b in doc["benchmarks"]],
            "archbench_partial": any(r.partial for r in loaded), "archbench_merged_from": [_short(p) for p in paths]}


def _short(path: str | Path) -> str:
    """A merged file's name with its folder (`decode/results.json`): enough to tell the parts apart,
    without the merging machine's directory layout."""
    return "/".join(Path(path).parts[-2:])


def to_frame(results: list[Results]) -> pd.DataFrame:
    """Tidy table of every benchmark of every file, one row each."""
    rows = []
    labels = _machine_labels(results)
    for res, label in zip(results, labels, strict=True):
        for bench in res.benchmarks:
            info = bench["extra_info"]
            family, device_type = _backend_kind(info)
            row = {"machine": label, "source": str(res.path), "name": bench.get("name"),
                   "group": bench.get("group"), "study": info["study"], "variant": info["variant"],
                   "backend": info["backend"], "backend_family": family, "device_type": device_type}
            row.update({f"p_{k}": v for k, v in info["params"].items()})
            row.update({f"m_{k}": v for k, v in info["metrics"].items()})
            row.update({f"time_{k}": bench["stats"].get(k) for k in STAT_FIELDS})
            row["time_data"] = bench["stats"].get("data")  # every round's seconds, where saved
            rows.append(row)
    return pd.DataFrame(rows)


def _backend_kind(info: dict) -> tuple[str, str | None]:
    """(family, device type) of a record's backend: its own fields (schema 2), else the registry's entry
    of that name (schema 1); a name the registry does not know is its own family."""
    if "backend_family" in info:
        return info["backend_family"], info.get("device_type")
    from bench import backends

    known = backends.BACKENDS.get(info["backend"])
    return (known.family, known.device_type) if known else (info["backend"], None)


def _machine_labels(results: list[Results]) -> list[str]:
    """Machine labels, made distinct when two files come from machines with the same name."""
    labels = [r.machine for r in results]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            label = f"{label} #{seen[label]}"
        out.append(label)
    return out
