"""Shared fixtures of the correctness tests."""

from __future__ import annotations

import itertools

import pytest
import torch

from models import ArchConfig
from models.config import MLP_KINDS, NORM_KINDS, POS_KINDS


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_config(**changes: object) -> ArchConfig:
    """A small config with odd-ish sizes used across tests (fast on a CPU)."""
    base = dict(vocab_size=61, n_layer=2, n_head=4, d_model=32, max_seq_len=48, d_ff=40)
    base.update(changes)
    return ArchConfig(**base)


ALL_SWITCHES = [
    dict(pos=p, norm=n, mlp=m, tie_weights=t)
    for p, n, m, t in itertools.product(POS_KINDS, NORM_KINDS, MLP_KINDS, (True, False))
]


def switch_id(switches: dict) -> str:
    return "-".join(str(v) if not isinstance(v, bool) else ("tied" if v else "untied") for v in switches.values())
