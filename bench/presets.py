"""Presets: how much each run measures. Each study holds its own sweep per preset (`bench/studies/*`)."""

from __future__ import annotations

from dataclasses import dataclass

from models.registry import Registry


@dataclass(frozen=True)
class Preset:
    """A size of run: every study runs the sweep it defines under this name (or nothing)."""

    name: str
    description: str


PRESETS: Registry[Preset] = Registry("preset", {p.name: p for p in (
    Preset("smoke", "seconds: every study's harness end to end on tiny models (the tests use it)"),
    Preset("quick", "minutes on a laptop CPU: tiny models to 512 tokens, GPT-2 124M at short lengths, every study "
                    "reduced"),
    Preset("standard", "tens of minutes on a CPU: tiny and mini models to 2048 tokens at batch 1 and 8, the "
                       "architecture studies at full size"),
    Preset("full", "for a GPU: GPT-2 124M to 774M, tiny models to 8192 tokens, KV-cache memory at 16k-64k tokens"),
)})


def get(name: str) -> Preset:
    """The preset called `name`; a miss lists the valid names."""
    return PRESETS.lookup(name)
