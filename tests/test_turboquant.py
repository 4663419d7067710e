"""TurboQuant against docs/references.md: Lloyd-Max tables, distortion, inner products, packing, bytes, caches."""

import math

import numpy as np
import pytest
import torch

from models import build, kv_cache
from models.attention import causal_attention
from models.quantized_cache import SplitTurboQuantKVCache, TurboQuantProdKVCache
from models.turboquant import (
    QJLSketch,
    TurboQuantizer,
    lloyd_max_gaussian,
    lloyd_max_sphere,
    pack_codes,
    random_rotation,
    unpack_codes,
)

from .helpers import tiny_config

# docs/references.md: Lloyd-Max for N(0, 1), positive half (levels, thresholds) and MSE
LLOYD_MAX = {
    1: ([0.797885], [0], 0.363380),
    2: ([0.452780, 1.510418], [0, 0.981599], 0.117482),
    3: ([0.245094, 0.756005, 1.343909, 2.151946], [0, 0.500550, 1.049957, 1.747927], 0.034548),
    4: ([0.128395, 0.388048, 0.656759, 0.942340, 1.256231, 1.618046, 2.069017, 2.732590],
        [0, 0.258222, 0.522404, 0.799550, 1.099286, 1.437139, 1.843532, 2.400803], 0.009501),
}
# docs/references.md: Monte Carlo MSE for unit vectors with a dense QR rotation (tolerance ~3%)
MSE_UNIT = {64: (0.358, 0.1145, 0.0334, 0.0092), 128: (0.361, 0.116, 0.0340, 0.0093)}
PAPER_MSE = (0.36, 0.117, 0.03, 0.009)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lloyd_max_gaussian_matches_the_table(bits: int) -> None:
    levels, thresholds, mse = lloyd_max_gaussian(bits)
    want_levels, want_thresholds, want_mse = LLOYD_MAX[bits]
    np.testing.assert_allclose(levels[len(levels) // 2:], want_levels, atol=2e-6)
    np.testing.assert_allclose(thresholds[len(thresholds) // 2:], want_thresholds, atol=2e-6)
    assert mse == pytest.approx(want_mse, abs=2e-6)
    np.testing.assert_allclose(levels, -levels[::-1], atol=1e-12)  # symmetric


@pytest.mark.parametrize("dim", [64, 128])
def test_sphere_codebook_distortion_and_bounds(dim: int) -> None:
    for bits in (1, 2, 3, 4):
        expected = dim * lloyd_max_sphere(bits, dim)[2]
        assert expected == pytest.approx(MSE_UNIT[dim][bits - 1], rel=0.02)
        assert 4.0**-bits <= expected <= math.sqrt(3) * math.pi / 2 * 4.0**-bits  # the paper's bounds


def _unit(n: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("dim", [64, 128])
def test_monte_carlo_distortion_matches_references(dim: int) -> None:
    x = _unit(20_000, dim, seed=1)
    for bits in (1, 2, 3, 4):
        tq = TurboQuantizer(dim, bits, seed=0, norm_dtype=torch.float32)
        mse = ((tq.dequantize(tq.quantize(x)) - x) ** 2).sum(-1).mean().item()
        assert mse == pytest.approx(MSE_UNIT[dim][bits - 1], rel=0.03), (bits, mse)
        assert mse == pytest.approx(PAPER_MSE[bits - 1], rel=0.15)


@pytest.mark.parametrize("kind", ["one-hot", "spiky"])
def test_adversarial_inputs_get_the_same_distortion(kind: str) -> None:
    dim, bits = 64, 3
    if kind == "one-hot":
        x = torch.eye(dim).repeat(200, 1)  # every basis vector, many times
    else:
        x = torch.zeros(12_800, dim)
        x[:, :3] = torch.randn(12_800, 3, generator=torch.Generator().manual_seed(2)) * 10
        x = x / x.norm(dim=-1, keepdim=True)
    errors = []
    for seed in range(8):  # the distortion is an expectation over the rotation
        tq = TurboQuantizer(dim, bits, seed=seed, norm_dtype=torch.float32)
        errors.append(((tq.dequantize(tq.quantize(x)) - x) ** 2).sum(-1).mean().item())
    assert float(np.mean(errors)) == pytest.approx(MSE_UNIT[64][bits - 1], rel=0.1)


def test_inner_products_shrink_by_one_minus_distortion() -> None:
    dim = 64
    x, q = _unit(20_000, dim, seed=3), _unit(20_000, dim, seed=4)
    for bits, ratio in zip((1, 2, 3, 4), (0.637, 0.883, 0.966, 0.991), strict=True):
        tq = TurboQuantizer(dim, bits, seed=0, norm_dtype=torch.float32)
        xq = tq.dequantize(tq.quantize(x))
        # E<q, xq> / <q, x> through the regression slope of <q, xq> on <q, x>
        exact, approx = (q * x).sum(-1), (q * xq).sum(-1)
        slope = float((exact * approx).sum() / (exact * exact).sum())
        assert slope == pytest.approx(ratio, abs=0.015), (bits, slope)


def test_rotation_is_orthogonal_and_seeded() -> None:
    r = random_rotation(64, seed=5)
    torch.testing.assert_close(r @ r.T, torch.eye(64), atol=1e-5, rtol=0)
    assert torch.equal(r, random_rotation(64, seed=5)) and not torch.equal(r, random_rotation(64, seed=6))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_packing_roundtrip_and_density(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (5, 3, 64))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 3, 64 * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, 64), codes)
    if bits == 3:
        assert pack_codes(torch.full((1, 8), 7), 3).tolist() == [[255, 255, 255]]  # 8 codes in 3 bytes


def test_storage_figures_of_references() -> None:
    tq = TurboQuantizer(64, 3)
    q = tq.quantize(torch.randn(10, 64))
    assert q.nbytes == 10 * 26  # 24 B codes + 2 B fp16 norm per vector
    bits_per_value = 26 * 8 / 64
    assert bits_per_value == 3.25
    fp16_ratio, fp32_ratio = 64 * 2 / 26, 64 * 4 / 26
    assert fp16_ratio == pytest.approx(4.92, abs=0.01) and fp32_ratio == pytest.approx(9.85, abs=0.01)


def test_bad_quantizer_arguments() -> None:
    with pytest.raises(ValueError, match="allowed values: 1, 2, 3, 4"):
        TurboQuantizer(64, 5)
    with pytest.raises(ValueError, match="allowed values: 1, 2, 3, 4"):
        TurboQuantizer(64, 3.0)  # a float is not a bit count, though it equals one
    with pytest.raises(ValueError, match="an integer >= 3"):
        TurboQuantizer(2, 3)


def _model(**changes):
    model = build(tiny_config(**changes), seed=2).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(20.0)
    return model


@pytest.mark.parametrize(("kind", "options"), [("tq3", {}), ("uniform3", {}), ("tq3.5", {}), ("tq2.5", {}),
                                              ("tq3", {"key_group": 16}), ("tq3", {"window": 8}),
                                              ("uniform2", {"key_group": 8})])
def test_cache_attention_equals_attention_over_what_it_stores(kind: str, options: dict) -> None:
    """The cache's attention (chunked, never expanding the whole cache) equals plain attention over the
    keys and values it stores, read back; appends of many tokens and of one, across key groups."""
    cfg = tiny_config(n_kv_head=2, d_model=64, n_head=4)  # head_dim 16
    cache = kv_cache.make(kind, cfg, batch=2, max_len=80, chunk=7, **options)
    torch.manual_seed(0)
    for t0, t1 in ((0, 37), (37, 38), (38, 70)):
        q = torch.randn(2, 4, t1 - t0, 16)
        k, v = torch.randn(2, 2, t1 - t0, 16), torch.randn(2, 2, t1 - t0, 16)
        got = cache.attend(0, q, k, v)
        keys, values = cache.readback(0, t1)
        expected = causal_attention(q, keys, values, q_start=t0, impl="reference")
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        for layer in range(1, cfg.n_layer):  # keep every layer in step
            cache.attend(layer, q, k, v)
        cache.advance(t1 - t0)


@pytest.mark.parametrize("kind", ["tq3", "uniform3", "tq3.5", "tq3-prod"])
def test_key_group_keeps_the_same_recent_keys_exact(kind: str) -> None:
    """With key_group=G every family reads the keys of the latest incomplete group of G exactly and no
    others: the comparison offers both families the same exact recent keys."""
    cfg = tiny_config(n_kv_head=2, d_model=64, n_head=4)
    cache = kv_cache.make(kind, cfg, batch=1, max_len=64, key_group=16)
    k, v = torch.randn(1, 2, 45, 16), torch.randn(1, 2, 45, 16)
    for layer in range(cfg.n_layer):
        cache.append(layer, k, v)
    cache.advance(45)
    keys, _ = cache.readback(0, 45)
    assert cache.exact_keys_from(45) == 32
    torch.testing.assert_close(keys[:, :, 32:], k[:, :, 32:], atol=0, rtol=0)  # the incomplete group: exact
    assert ((keys[:, :, :32] - k[:, :, :32]).abs().amax(-1) > 1e-3).all()  # complete groups: quantized


def test_unknown_cache_option_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="takes no option group; its options: key_group, chunk"):
        kv_cache.make("uniform3", tiny_config(), 1, 8, group=16)
    with pytest.raises(ValueError, match="its options: none"):
        kv_cache.make("raw-fp32", tiny_config(), 1, 8, chunk=4)


def test_outlier_split_bytes_and_the_papers_bits() -> None:
    """tq2.5 / tq3.5: a quarter of the channels one bit higher, two fp16 norms: at head_dim 128 exactly the
    paper's 2.5 and 3.5 bits per coordinate (docs/references.md), at 64: 2.75 and 3.75."""
    hd128, hd64 = tiny_config(n_head=2, d_model=256), tiny_config(n_head=2, d_model=128)
    per_vector_128 = {"tq2.5": 12 + 24 + 4, "tq3.5": 16 + 36 + 4}  # 32 ch x (b+1) bits, 96 ch x b bits, 2 norms
    for kind, per_vector in per_vector_128.items():
        cache = kv_cache.make(kind, hd128, batch=2, max_len=10)
        assert cache.bytes_per_token == 2 * hd128.n_layer * 2 * hd128.kv_heads * per_vector
        assert kv_cache.spec(kind).marginal_bits(hd128) == float(kind[2:])
    assert kv_cache.spec("tq2.5").marginal_bits(hd64) == 2.75 and kv_cache.spec("tq3.5").marginal_bits(hd64) == 3.75
    assert kv_cache.spec("tq3-prod").marginal_bits(hd64) == (16 + 8 + 4 + 24 + 2) * 8 / 128  # keys 2+1 bits, values 3
    assert kv_cache.spec("uniform3").marginal_bits(hd64) == 3.75  # the same bits as tq3.5 at head_dim 64


def test_outlier_split_gives_the_outlier_channels_the_higher_precision() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 40, 32)
    x[:, 0, :, [3, 17]] *= 30  # two loud channels in head 0, one in head 1
    x[:, 1, :, 9] *= 30
    cache = SplitTurboQuantKVCache(1, 1, 2, 32, 40, bits=2, outliers=8)
    cache.append(0, x, x)
    assert {3, 17} <= set(cache.k_channels[0, 0, :8].tolist()) and 9 in cache.v_channels[0, 1, :8].tolist()
    keys, _ = cache.readback(0, 40)
    plain = kv_cache.make("tq2", tiny_config(n_head=2, d_model=64, n_layer=1), 1, 40)
    plain.append(0, x, x)
    plain_keys, _ = plain.readback(0, 40)
    assert (keys - x).pow(2).mean() < (plain_keys - x).pow(2).mean()  # the split beats one instance here


def test_qjl_sketch_is_unbiased_within_its_variance() -> None:
    """|r| sqrt(pi/2)/d <S y, sign(S r)> over independent draws of S: mean <y, r>, variance at most
    pi/(2d) |y|^2 |r|^2 (the paper's Lemma)."""
    dim, draws = 64, 2000
    torch.manual_seed(0)
    r, y = torch.randn(dim), torch.randn(dim)
    estimates = []
    for seed in range(draws):
        sketch = QJLSketch(dim, seed=seed)
        estimates.append(sketch.inner_products(sketch.project(y)[None], sketch.signs(r)[None], r.norm()[None]).item())
    estimates = torch.tensor(estimates)
    bound = math.pi / (2 * dim) * y.norm().item() ** 2 * r.norm().item() ** 2
    assert estimates.var().item() <= 1.1 * bound
    assert abs(estimates.mean().item() - (y @ r).item()) < 4 * math.sqrt(bound / draws)


def test_prod_keys_give_unbiased_scores_where_mse_keys_shrink_them() -> None:
    """TurboQuant_prod's attention scores average to <q, k> over seeds; the MSE quantizer at the same
    first-stage bits shrinks them by about 1 - D (0.883 at 2 bits)."""
    dim, seeds = 64, 150
    torch.manual_seed(1)
    k = torch.randn(1, 1, 32, dim)
    q = torch.randn(1, 1, 1, dim)
    exact = (q @ k.transpose(-1, -2)).flatten()  # (32,)
    prod, mse = [], []
    for seed in range(seeds):
        cache = TurboQuantProdKVCache(1, 1, 1, dim, 32, bits=3, seed=seed)
        cache.append(0, k, k)
        prod.append(cache._key_scores(0, cache._prepare_queries(q), 0, 32).flatten())
        plain = kv_cache.make("tq2", tiny_config(n_head=1, d_model=64, n_layer=1), 1, 32, seed=seed)
        plain.append(0, k, k)
        mse.append((q @ plain.readback(0, 32)[0].transpose(-1, -2)).flatten())
    prod_slope = float((torch.stack(prod).mean(0) @ exact) / (exact @ exact))
    mse_slope = float((torch.stack(mse).mean(0) @ exact) / (exact @ exact))
    assert prod_slope == pytest.approx(1.0, abs=0.03), prod_slope
    assert mse_slope == pytest.approx(0.883, abs=0.03), mse_slope


def test_full_window_is_exact_and_quantization_is_close() -> None:
    model = _model(d_model=64, n_head=4)
    idx = torch.randint(0, model.config.vocab_size, (1, 40))
    with torch.no_grad():
        full = model(idx)
        window = kv_cache.make("tq3", model.config, 1, 40, window=40)
        exact = torch.cat([model(idx[:, :10], window), *[model(idx[:, t : t + 1], window) for t in range(10, 40)]], 1)
        torch.testing.assert_close(exact, full, atol=1e-4, rtol=0)
        errors = {}
        for kind in ("tq2", "tq3", "tq4"):
            cache = kv_cache.make(kind, model.config, 1, 40)
            prefill = model(idx[:, :10], cache)
            stepped = torch.cat([prefill, *[model(idx[:, t : t + 1], cache) for t in range(10, 40)]], 1)
            errors[kind] = (stepped - full).abs().mean().item()
    assert errors["tq4"] < errors["tq3"] < errors["tq2"]
    assert errors["tq4"] > 0


def test_cache_bytes_are_exact() -> None:
    cfg = tiny_config(n_layer=3, n_head=4, d_model=256, n_kv_head=2)  # head_dim 64
    tq = kv_cache.make("tq3", cfg, batch=2, max_len=100)
    assert tq.bytes_per_token == 2 * 3 * 2 * 2 * 26  # K and V, layers, batch, kv heads, 26 B per vector
    raw16 = kv_cache.make("raw-fp16", cfg, batch=2, max_len=100)
    assert raw16.bytes_per_token / tq.bytes_per_token == pytest.approx(4.92, abs=0.01)
    codebook = sum(b.numel() * b.element_size() for b in tq.quantizer.buffers())
    assert tq.nbytes == tq.bytes_per_token * 100 + codebook  # codes, norms and the rotation: every byte held
    windowed = kv_cache.make("tq3", cfg, batch=2, max_len=100, window=8)
    assert windowed.nbytes == tq.nbytes + 2 * 3 * 2 * 2 * 8 * 64 * 4
    grouped = kv_cache.make("tq3", cfg, batch=2, max_len=100, key_group=32)  # exact keys only
    assert grouped.nbytes == tq.nbytes + 3 * 2 * 2 * 32 * 64 * 4 and grouped.bytes_per_token == tq.bytes_per_token


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 13, 60])
def test_packing_lengths_not_multiple_of_eight(bits: int, n: int) -> None:
    codes = torch.randint(0, 2**bits, (3, n))
    packed = pack_codes(codes, bits)
    assert packed.shape == (3, -(-n // 8) * bits)
    assert torch.equal(unpack_codes(packed, bits, n), codes)


def test_odd_dimension_and_zero_vectors() -> None:
    tq = TurboQuantizer(36, 3)
    x = torch.randn(500, 36)
    x[:7] = 0.0
    out = tq.dequantize(tq.quantize(x))
    assert torch.isfinite(out).all() and torch.equal(out[:7], torch.zeros(7, 36))
    unit = x[7:] / x[7:].norm(dim=-1, keepdim=True)
    mse = ((tq.dequantize(tq.quantize(unit)) - unit) ** 2).sum(-1).mean().item()
    assert mse == pytest.approx(tq.expected_mse, rel=0.1)
    assert tq.quantize(x).nbytes == 500 * (15 + 2)  # 5 groups of 8 codes (3 bytes each) + fp16 norm


def test_codebook_optimality_conditions() -> None:
    for bits in (2, 3):
        levels, thresholds, _ = lloyd_max_sphere(bits, 64)
        np.testing.assert_allclose(thresholds, (levels[1:] + levels[:-1]) / 2, atol=1e-12)  # midpoints
        # centroids: a Monte Carlo estimate of E[x | cell] for the coordinate of a random unit vector
        x = _unit(50_000, 64, seed=9)[:, 0].double().numpy()
        cells = np.searchsorted(thresholds, x)
        for i, level in enumerate(levels):
            assert x[cells == i].mean() == pytest.approx(level, abs=4e-3)


def test_tq3_decode_on_a_trained_model_stays_close_to_raw() -> None:
    """A small model trained for 150 steps (~6 s); tq3 against the raw cache on held-out windows.
    Bound: mean KL <= 0.1 nats per token and top-1 agreement >= 85%."""
    import torch.nn.functional as F

    from models import ArchConfig, corpus
    from models.reference import TrainConfig, train

    arch = ArchConfig(n_layer=2, n_head=2, d_model=64, max_seq_len=64)  # head_dim 32
    model = train(arch, TrainConfig(steps=150, batch_size=32, seq_len=64, eval_windows=8), progress=False).model
    windows = corpus.eval_windows(corpus.load().tokens("val"), 64, 32)[:, :-1]
    with torch.no_grad():
        raw = model(windows, kv_cache.make("raw-fp32", arch, 32, 64))
        tq = model(windows, kv_cache.make("tq3", arch, 32, 64))
    log_p, log_q = F.log_softmax(raw, -1), F.log_softmax(tq, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    top1 = (raw.argmax(-1) == tq.argmax(-1)).float().mean().item()
    assert 0 < kl <= 0.1 and top1 >= 0.85, (kl, top1)
