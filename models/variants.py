"""Named configurations. Exact names only; `get` lists the valid ones on a miss.

Families: gpt2 (learned positions, Pre-LN, tied, GELU), llama (RoPE, Pre-RMSNorm, untied, SwiGLU,
no biases), vaswani (sinusoidal positions, Post-LN, tied, GELU, embeddings scaled by sqrt(d_model); the
2017 decoder stack with GELU for ReLU). `gpt2-tiny-hd64` and `gpt2-mini-hd64` have heads of 64 (GPT-2's
head_dim): the accuracy studies' reference models. The byte-level `-tiny` / `-mini` sizes run anywhere; the 7B- and 70B-class shapes are for
counting on the meta device (`models.build(cfg, device="meta")`). Parameter counts are exact
(`tests/test_variants.py` checks them).
"""

from __future__ import annotations

from .config import ArchConfig
from .registry import Registry

_GPT2 = dict(pos="learned", norm="pre_ln", tie_weights=True, mlp="gelu", bias=True, gelu_approximate="tanh")
_LLAMA = dict(pos="rope", norm="pre_rms", tie_weights=False, mlp="swiglu", bias=False)
_VASWANI = dict(pos="sinusoidal", norm="post_ln", tie_weights=True, mlp="gelu", bias=True, gelu_approximate="none",
                embed_scale=True)

VARIANTS: Registry[ArchConfig] = Registry("variant", {
    "gpt2-tiny": ArchConfig(vocab_size=256, n_layer=4, n_head=4, d_model=128, max_seq_len=1024, **_GPT2),  # 957,184
    "gpt2-tiny-hd64": ArchConfig(vocab_size=256, n_layer=4, n_head=2, d_model=128, max_seq_len=1024, **_GPT2),  # 957,184
    "gpt2-mini-hd64": ArchConfig(vocab_size=256, n_layer=6, n_head=4, d_model=256, max_seq_len=1024, **_GPT2),  # 5,066,752
    "gpt2-mini": ArchConfig(vocab_size=256, n_layer=6, n_head=8, d_model=256, max_seq_len=1024, **_GPT2),  # 5,066,752
    "gpt2-small": ArchConfig(vocab_size=50257, n_layer=12, n_head=12, d_model=768, max_seq_len=1024, **_GPT2),  # 124,439,808
    "gpt2-medium": ArchConfig(vocab_size=50257, n_layer=24, n_head=16, d_model=1024, max_seq_len=1024, **_GPT2),  # 354,823,168
    "gpt2-large": ArchConfig(vocab_size=50257, n_layer=36, n_head=20, d_model=1280, max_seq_len=1024, **_GPT2),  # 774,030,080
    "gpt2-xl": ArchConfig(vocab_size=50257, n_layer=48, n_head=25, d_model=1600, max_seq_len=1024, **_GPT2),  # 1,557,611,200
    "llama-tiny": ArchConfig(vocab_size=256, n_layer=4, n_head=4, n_kv_head=2, d_model=128, d_ff=344, max_seq_len=1024, **_LLAMA),  # 791,680
    "llama-mini": ArchConfig(vocab_size=256, n_layer=6, n_head=8, n_kv_head=4, d_model=256, d_ff=688, max_seq_len=1024, **_LLAMA),  # 4,484,352
    "llama-3.2-1b": ArchConfig(vocab_size=128256, n_layer=16, n_head=32, n_kv_head=8, d_model=2048, d_ff=8192, max_seq_len=131072, rope_theta=500000.0, **{**_LLAMA, "tie_weights": True}),  # 1,235,814,400 (it ties)
    "llama-2-7b": ArchConfig(vocab_size=32000, n_layer=32, n_head=32, d_model=4096, d_ff=11008, max_seq_len=4096, **_LLAMA),  # 6,738,415,616
    "llama-3-8b": ArchConfig(vocab_size=128256, n_layer=32, n_head=32, n_kv_head=8, d_model=4096, d_ff=14336, max_seq_len=8192, rope_theta=500000.0, **_LLAMA),  # 8,030,261,248
    "mistral-7b": ArchConfig(vocab_size=32000, n_layer=32, n_head=32, n_kv_head=8, d_model=4096, d_ff=14336, max_seq_len=32768, **_LLAMA),  # 7,241,732,096
    "llama-3-70b": ArchConfig(vocab_size=128256, n_layer=80, n_head=64, n_kv_head=8, d_model=8192, d_ff=28672, max_seq_len=8192, rope_theta=500000.0, **_LLAMA),  # 70,553,706,496
    "llama-2-70b": ArchConfig(vocab_size=32000, n_layer=80, n_head=64, n_kv_head=8, d_model=8192, d_ff=28672, max_seq_len=4096, **_LLAMA),  # 68,976,648,192
    "vaswani-tiny": ArchConfig(vocab_size=256, n_layer=4, n_head=4, d_model=128, max_seq_len=1024, **_VASWANI),  # 825,856
    "vaswani-mini": ArchConfig(vocab_size=256, n_layer=6, n_head=8, d_model=256, max_seq_len=1024, **_VASWANI),  # 4,804,096
    "vaswani-base": ArchConfig(vocab_size=37000, n_layer=6, n_head=8, d_model=512, d_ff=2048, max_seq_len=512, **_VASWANI),  # 37,858,304
})


def get(name: str) -> ArchConfig:
    """The config named `name` (exact match); a miss raises ValueError listing every valid name."""
    return VARIANTS.lookup(name)


def names(family: str | None = None) -> list[str]:
    """Variant names, optionally only those of one family (gpt2, llama, vaswani, mistral)."""
    return [n for n in VARIANTS if family is None or n.split("-")[0] == family]
