"""Helpers the correctness tests share: a small config, every switch combination, a checkpoint on disk."""

from __future__ import annotations

import itertools

import pytest
import torch

from models import ArchConfig
from models.config import MLP_KINDS, NORM_KINDS, POS_KINDS


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


def covering_pairs(combinations: list[dict]) -> list[dict]:
    """A subset of `combinations` in which every pair of values of two different switches occurs (all-pairs,
    chosen greedily: each pick covers the most pairs not yet covered; deterministic)."""
    def pairs(combination: dict) -> set:
        return set(itertools.combinations(sorted(combination.items()), 2))

    uncovered = set().union(*map(pairs, combinations))
    chosen = []
    while uncovered:
        best = max(combinations, key=lambda c: len(pairs(c) & uncovered))
        chosen.append(best)
        uncovered -= pairs(best)
    return chosen


PAIRWISE_SWITCHES = covering_pairs(ALL_SWITCHES)


def every_switch_tiered() -> list:
    """ALL_SWITCHES as pytest params for the costly parity tests: the all-pairs subset runs in every test run,
    the other combinations are marked `thorough` (`pytest --thorough`; CI runs them)."""
    return [pytest.param(s, id=switch_id(s), marks=() if s in PAIRWISE_SWITCHES else pytest.mark.thorough)
            for s in ALL_SWITCHES]


def write_byte_level_checkpoint(directory, n_layer: int = 2, seed: int = 0, model_type: str = "gpt2"):
    """A small transformers checkpoint (`model_type` gpt2 or llama) with a byte-level tokenizer (token id =
    byte value, 256 is end-of-text), written to `directory` without any download: what `--weights` expects."""
    transformers = pytest.importorskip("transformers", reason="transformers writes the checkpoint")
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers builds the tokenizer")
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    to_char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}  # GPT-2's byte map
    vocab = {to_char[b]: b for b in range(256)} | {"<|endoftext|>": 256}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(directory)
    if model_type == "llama":
        cfg = transformers.LlamaConfig(vocab_size=257, hidden_size=64, intermediate_size=176, num_hidden_layers=n_layer,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                       bos_token_id=256, eos_token_id=256, tie_word_embeddings=False)
        make = transformers.LlamaForCausalLM
    else:
        cfg = transformers.GPT2Config(vocab_size=257, n_positions=256, n_embd=64, n_layer=n_layer, n_head=4,
                                      bos_token_id=256, eos_token_id=256)
        make = transformers.GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make(cfg)
    model.save_pretrained(directory)
    return directory
