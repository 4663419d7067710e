"""ArchConfig validation: clear ValueErrors naming the field and the allowed values."""

import dataclasses

import pytest

from models import ArchConfig


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("pos", "alibi", "learned, sinusoidal, rope"),
        ("norm", "layernorm", "post_ln, pre_ln, pre_rms"),
        ("mlp", "relu", "gelu, swiglu"),
        ("gelu_approximate", "fast", "tanh, none"),
        ("n_layer", 0, "positive integer"),
        ("vocab_size", -3, "positive integer"),
        ("d_model", 130, "multiple of n_head"),
        ("n_kv_head", 3, "divisor of n_head"),
        ("tie_weights", "yes", "True, False"),
        ("embed_scale", 1, "True, False"),
        ("norm_eps", 0.0, "positive finite number"),
        ("rope_theta", float("inf"), "positive finite number"),
        ("init_std", float("inf"), "positive finite number"),
        ("init_std", float("nan"), "positive finite number"),
    ],
)
def test_invalid_value_names_field_and_allowed_values(field: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError, match=f"ArchConfig.{field}=") as info:
        ArchConfig(**{field: value})
    assert expected in str(info.value)


def test_rope_needs_even_head_dim() -> None:
    with pytest.raises(ValueError, match="even head_dim"):
        ArchConfig(pos="rope", n_head=2, d_model=6)


def test_frozen_and_derived_sizes() -> None:
    cfg = ArchConfig(d_model=128, n_head=4, n_kv_head=2, mlp="gelu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layer = 9  # type: ignore[misc]
    assert cfg.head_dim == 32 and cfg.kv_heads == 2 and cfg.ff_dim == 512
    assert ArchConfig(d_model=4096, n_head=32, mlp="swiglu").ff_dim == 11008  # Llama-2-7B's hidden width
    assert cfg.replace(n_layer=2).n_layer == 2 and cfg.fingerprint() != cfg.replace(n_layer=2).fingerprint()


def test_gpt2_small_kv_bytes_per_token() -> None:
    # docs/references.md: GPT-2 small holds 73,728 B per token in fp32.
    gpt2_small = ArchConfig(vocab_size=50257, n_layer=12, n_head=12, d_model=768, max_seq_len=1024)
    assert gpt2_small.kv_bytes_per_token == 73728
