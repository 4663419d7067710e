"""The GPT with a raw KV cache equals the full uncached forward, for every combination of switches."""

import re

import pytest
import torch

from models import PositionLimitError, build, generate, kv_cache
from models.attention import causal_attention
from models.kv_cache import CacheFullError
from models.layers import RotaryEmbedding, apply_rope

from .helpers import ALL_SWITCHES, switch_id, tiny_config


def _random_model(**switches):
    cfg = tiny_config(**switches)
    model = build(cfg, seed=1).eval()
    with torch.no_grad():  # norms and biases away from their init, so every parameter matters
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
            elif "emb" in name or "lm_head" in name:
                p.mul_(20.0)  # logits of a useful size
    return model


@pytest.mark.parametrize("switches", ALL_SWITCHES, ids=switch_id)
def test_prefill_then_cached_steps_equal_full_forward(switches: dict) -> None:
    model = _random_model(**switches)
    cfg = model.config
    idx = torch.randint(0, cfg.vocab_size, (2, 20))  # (B, T)
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        assert full.abs().max() > 0.5  # a comparison of near-zero logits would prove nothing
        cache = kv_cache.make("raw-fp32", cfg, batch=2, max_len=24)
        prefill = model(idx[:, :7], cache)
        steps = [model(idx[:, t : t + 1], cache) for t in range(7, 20)]
    cached = torch.cat([prefill, *steps], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
    assert cache.position == 20


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
def test_chunked_appends_and_reference_attention(pos: str) -> None:
    model = _random_model(pos=pos, n_kv_head=2, embed_scale=pos == "sinusoidal")
    idx = torch.randint(0, model.config.vocab_size, (1, 30))
    with torch.no_grad():
        full = model(idx)
        cache = kv_cache.make("raw-fp32", model.config, batch=1, max_len=30)
        chunks = [model(idx[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 17), (17, 30))]
        torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)
        model.set_attention_impl("reference")
        torch.testing.assert_close(model(idx), full, atol=1e-5, rtol=0)
        cache.reset()
        reference_steps = torch.cat([model(idx[:, t : t + 1], cache) for t in range(30)], dim=1)
        torch.testing.assert_close(reference_steps, full, atol=1e-5, rtol=0)


def test_attention_paths_agree_with_grouped_heads_and_offset_queries() -> None:
    q = torch.randn(2, 8, 5, 16)  # (B, H, Tq, hd)
    k, v = torch.randn(2, 2, 12, 16), torch.randn(2, 2, 12, 16)  # (B, Hkv, Tk, hd)
    fast = causal_attention(q, k, v, q_start=7, impl="sdpa")
    reference = causal_attention(q, k, v, q_start=7, impl="reference")
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="allowed values: sdpa, reference"):
        causal_attention(q, k, v, q_start=7, impl="flash")


def test_cache_bytes_reset_and_capacity() -> None:
    cfg = tiny_config(n_kv_head=2)
    cache = kv_cache.make("raw-fp16", cfg, batch=3, max_len=10)
    per_token = 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim * 3 * 2  # K and V, layers, heads, hd, batch, fp16
    assert cache.bytes_per_token == per_token and cache.nbytes == per_token * 10
    model = build(cfg, seed=0).eval()
    with torch.no_grad():
        model(torch.zeros(3, 6, dtype=torch.long), cache)
        assert cache.position == 6
        with pytest.raises(CacheFullError, match="max_len"):
            model(torch.zeros(3, 5, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="batch 2 does not match the cache's batch 3"):
            model(torch.zeros(2, 1, dtype=torch.long), cache)
        cache.reset()
        assert cache.position == 0
        model(torch.zeros(3, 10, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=re.escape("valid names: raw-fp32, raw-fp16, raw-bf16, tq2, tq3, tq4, tq2.5")):
        kv_cache.make("int3", cfg, batch=1, max_len=4)


@pytest.mark.parametrize("kind", kv_cache.kinds())
def test_append_past_max_len_names_the_limit_for_every_kind(kind: str) -> None:
    """Filling a cache directly (`append`, as the accuracy studies do) past its length is the named
    CacheFullError of `check_append`, for every kind, not an indexing error from a buffer."""
    cfg = tiny_config(n_head=2, d_model=64)  # head_dim 32: room for the split kinds' outlier channels
    cache = kv_cache.make(kind, cfg, batch=1, max_len=8)
    k = torch.randn(1, cfg.kv_heads, 8, cfg.head_dim)  # (B, Hkv, T, hd)
    for layer in range(cfg.n_layer):
        cache.append(layer, k, k)
    cache.advance(8)
    with pytest.raises(CacheFullError, match="cache holds 8 of 8 tokens; appending 1 would exceed max_len"):
        cache.append(0, k[:, :, :1], k[:, :, :1])


def test_low_precision_cache_is_close() -> None:
    model = _random_model(pos="rope")
    idx = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        full = model(idx)
        for dtype, tol in ((torch.float16, 2e-2), (torch.bfloat16, 1.5e-1)):
            cache = kv_cache.make(kv_cache.raw_kind(dtype), model.config, batch=1, max_len=16)
            stepped = torch.cat([model(idx[:, t : t + 1], cache) for t in range(16)], dim=1)
            err = (stepped - full).abs().max().item()
            assert 0 < err < tol, (dtype, err)  # rounding shows, and stays small


def test_rope_scores_depend_only_on_position_difference() -> None:
    head_dim = 16
    rope = RotaryEmbedding(head_dim)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(m: int, n: int) -> torch.Tensor:
        cos, sin = rope(torch.tensor([m, n]))  # (2, hd)
        qm = apply_rope(q.view(1, 1, 1, -1), cos[:1], sin[:1]).flatten()
        kn = apply_rope(k.view(1, 1, 1, -1), cos[1:], sin[1:]).flatten()
        return qm @ kn

    for m, n, shift in ((5, 2, 11), (0, 0, 300), (40, 1, 7), (3, 9, 1000)):
        torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)


def test_learned_positions_refuse_beyond_table() -> None:
    model = build(tiny_config(pos="learned", max_seq_len=16), seed=0)
    with pytest.raises(PositionLimitError, match="learned position table holds 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = kv_cache.make("raw-fp32", model.config, batch=1, max_len=40)
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long), cache)
        with pytest.raises(PositionLimitError, match="positions up to 17"):
            model(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(PositionLimitError):
        generate(model, torch.zeros(1, 10, dtype=torch.long), 8)
    for pos in ("sinusoidal", "rope"):  # no table, no limit
        other = build(tiny_config(pos=pos, max_seq_len=16), seed=0)
        assert other(torch.zeros(1, 40, dtype=torch.long)).shape == (1, 40, 61)


@pytest.mark.parametrize("switches", ALL_SWITCHES[::5], ids=switch_id)
def test_greedy_generate_same_with_and_without_cache(switches: dict) -> None:
    model = _random_model(**switches)
    prompt = torch.randint(0, model.config.vocab_size, (2, 5))
    cached = generate(model, prompt, 30, use_cache=True)
    uncached = generate(model, prompt, 30, use_cache=False)
    assert cached.shape == (2, 35)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :5], prompt)
    with pytest.raises(ValueError, match="use_cache=False"):
        generate(model, prompt, 3, use_cache=False, cache=kv_cache.make("raw-fp32", model.config, 2, 8))


def test_generate_fills_a_given_cache() -> None:
    model = _random_model()
    cache = kv_cache.make("raw-fp32", model.config, batch=1, max_len=12)
    out = generate(model, torch.tensor([[1, 2, 3]]), 9, cache=cache)
    assert out.shape == (1, 12) and cache.position == 11  # the last token is produced, never fed back


def test_token_ids_of_the_wrong_shape_type_or_range_are_named() -> None:
    model = build(tiny_config(), seed=0)  # vocab_size 61
    for bad, what in ((torch.zeros(4, dtype=torch.long), r"\(4,\)"), (torch.zeros(1, 4), "torch.float32")):
        with pytest.raises(ValueError, match=f"idx must be \\(batch, length\\) integer token ids, got .*{what}"):
            model(bad)
    with pytest.raises(ValueError, match="token ids from 0 to 61; this model's are 0 to 60 \\(vocab_size=61\\)"):
        generate(model, torch.tensor([[0, 61]]), 2)
    with pytest.raises(ValueError, match="token ids from -1 to 3"):
        generate(model, torch.tensor([[-1, 3]]), 2)
    with pytest.raises(ValueError, match=r"integer token ids, got torch\.float32"):
        generate(model, torch.zeros(1, 3), 2)
    assert generate(model, torch.tensor([[0, 60]], dtype=torch.int32), 2).shape == (1, 4)
