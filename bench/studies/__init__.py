"""The study registry: one line per study. A study lives in its own folder here (see `bench.study`)."""

from __future__ import annotations

from bench.study import Study
from models.registry import Registry

from . import decode, int8, kv, lora, norms, positions, tying

STUDIES: Registry[Study] = Registry("study", {s.name: s for s in (
    decode.STUDY,  # decode time vs length with and without a KV cache; engines side by side; transformers
    kv.STUDY,  # KV cache kinds: exact bytes, peak memory, speed and accuracy
    int8.STUDY,  # INT8 schemes with norms kept or quantized: accuracy, size, speed
    lora.STUDY,  # LoRA vs rsLoRA
    positions.STUDY,  # learned, sinusoidal and rotary positions
    norms.STUDY,  # Post-LN, Pre-LN, Pre-RMSNorm
    tying.STUDY,  # tied vs untied output head
)})


def register(study: Study) -> Study:
    """Add a study at run time (a name already taken raises ValueError); returns it."""
    return STUDIES.register(study.name, study)


def get(name: str) -> Study:
    """The study called `name` (exact match); a miss lists the valid names."""
    return STUDIES.lookup(name)


def owner(record_study: str) -> Study | None:
    """The study that writes records of `record_study` (None: no registered study does)."""
    return next((s for s in STUDIES.values() if record_study in s.records), None)


def all_claims() -> list:
    """Every registered study's claims, in registry order."""
    return [claim for study in STUDIES.values() for claim in study.judge_half().CLAIMS]
