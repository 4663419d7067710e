"""archbench's own CPU kernels (models/kernels.c): the single-row product and the one-token attention step,
built at first use, exact against torch, and unavailable with a reason where no compiler can build them."""

from __future__ import annotations

import pytest
import torch

from models import kernels
from models.kernels import attend_step
from models.layout import RowGemvLinear, to_row_gemv

needs_kernel = pytest.mark.skipif(kernels.unavailable_reason() is not None,
                                  reason=f"archbench's CPU kernels are unavailable: {kernels.unavailable_reason()}")


@needs_kernel
@pytest.mark.parametrize(("out_features", "in_features"),  # (10, 100): vector body + scalar tail, 2 last rows
                         [(2304, 768), (7, 13), (1, 3), (50257, 64), (5, 3072), (10, 100)])
@pytest.mark.parametrize("bias", [True, False])
def test_gemv_matches_torch_on_awkward_shapes(out_features: int, in_features: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(out_features + in_features)
    weight = torch.randn(out_features, in_features, generator=g)  # (out, in)
    x = torch.randn(in_features, generator=g)  # (in,)
    b = torch.randn(out_features, generator=g) if bias else None
    expected = torch.nn.functional.linear(x, weight, b)  # (out,)
    torch.testing.assert_close(kernels.gemv(weight, x, b), expected, atol=1e-5 * in_features**0.5, rtol=1e-5)


@needs_kernel
def test_gemv_uses_every_thread_count_alike() -> None:
    weight, x = torch.randn(1000, 300), torch.randn(300)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(kernels.gemv(weight, x))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])  # each row is summed by one thread, in order


@needs_kernel
def test_gemv_rejects_what_it_cannot_read() -> None:
    weight = torch.randn(8, 4)
    with pytest.raises(ValueError, match="x as a contiguous CPU float32 tensor of 4 elements"):
        kernels.gemv(weight, torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight as a contiguous"):
        kernels.gemv(weight.t(), torch.randn(8))
    with pytest.raises(ValueError, match="bias as a contiguous CPU float32 tensor of 8 elements"):
        kernels.gemv(weight, torch.randn(4), torch.randn(7))


@needs_kernel
@pytest.mark.parametrize("bias", [True, False])
def test_row_gemv_linear_shares_the_weight_and_falls_back_for_several_rows(bias: bool) -> None:
    linear = torch.nn.Linear(48, 20, bias=bias)
    row = RowGemvLinear(linear)
    assert row.weight.data_ptr() == linear.weight.data_ptr()  # the weight is shared, not copied
    with torch.inference_mode():
        for shape in [(1, 1, 48), (48,), (3, 48), (2, 5, 48)]:  # one row (the kernel) and several (F.linear)
            x = torch.randn(*shape)
            torch.testing.assert_close(row(x), linear(x), atol=1e-5, rtol=1e-5)
            assert row(x).shape == linear(x).shape
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    to_row_gemv(model)
    assert [type(m).__name__ for m in model.modules()].count("RowGemvLinear") == 2


@pytest.fixture
def fresh_kernels(monkeypatch: pytest.MonkeyPatch):
    """The kernels looked up anew under the test's environment, and again after it is restored."""
    kernels._load.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    kernels._load.cache_clear()


def test_gemv_without_a_compiler_is_unavailable_with_the_reason(fresh_kernels, tmp_path) -> None:
    from bench.backends import get

    fresh_kernels.setenv("CC", "no-such-cc")
    fresh_kernels.setenv("ARCHBENCH_CACHE_DIR", str(tmp_path))
    reason = kernels.unavailable_reason()
    assert reason is not None and "'no-such-cc' is not on PATH" in reason
    assert "gemv" not in get("torch-cpu").layouts(torch.float32)
    assert get("torch-cpu").attention(torch.float32) == "sdpa"  # the attention step falls back to torch's
    with pytest.raises(RuntimeError, match="CPU kernels are unavailable: no C compiler"):
        kernels.gemv(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(RuntimeError, match="the gemv layout is unavailable here: no C compiler"):
        to_row_gemv(torch.nn.Linear(2, 2))


def test_gemv_reports_a_compiler_that_cannot_build_it(fresh_kernels, tmp_path) -> None:
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'fakecc: error: unsupported option -fopenmp' >&2\nexit 1\n")
    fake.chmod(0o755)
    fresh_kernels.setenv("CC", str(fake))
    fresh_kernels.setenv("ARCHBENCH_CACHE_DIR", str(tmp_path / "cache"))
    reason = kernels.unavailable_reason()
    assert reason is not None and "could not build kernels.c" in reason and "unsupported option -fopenmp" in reason
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))  # nothing half-built left behind


def test_gemv_reports_a_cache_directory_it_cannot_write(fresh_kernels, tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the cache directory's parent is a file: nothing can be created below it
    fresh_kernels.setenv("ARCHBENCH_CACHE_DIR", str(blocker / "cache"))
    reason = kernels.unavailable_reason()
    if reason and "not on PATH" in reason:
        pytest.skip(reason)
    assert reason is not None and "could not be built into" in reason


def _step_case(batch: int, heads: int, kv_heads: int, hd: int, position: int, max_len: int, seed: int):
    """Queries and new keys/values laid out as a fused projection's one-token views, and a cache with
    `position` rows filled: what the raw cache hands the attention kernel."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, 1, (heads + 2 * kv_heads) * hd, generator=g)  # (B, 1, (H + 2 Hkv) hd)
    q, k, v = qkv.split((heads * hd, kv_heads * hd, kv_heads * hd), dim=-1)
    q = q.view(batch, 1, heads, hd).transpose(1, 2)  # (B, H, 1, hd), a view
    k = k.view(batch, 1, kv_heads, hd).transpose(1, 2)  # (B, Hkv, 1, hd)
    v = v.view(batch, 1, kv_heads, hd).transpose(1, 2)
    k_cache = torch.randn(batch, kv_heads, max_len, hd, generator=g)  # rows beyond `position` are never read
    v_cache = torch.randn(batch, kv_heads, max_len, hd, generator=g)
    return q, k, v, k_cache, v_cache


@needs_kernel
@pytest.mark.parametrize(("batch", "heads", "kv_heads", "hd", "position"),
                         [(1, 12, 12, 64, 0), (1, 12, 12, 64, 130), (2, 8, 2, 16, 9), (3, 4, 1, 12, 6),
                          (1, 2, 2, 256, 40), (1, 6, 3, 20, 2)])  # hd 12, 20: the scalar tail of each row
def test_attend_step_stores_the_token_and_matches_sdpa(batch, heads, kv_heads, hd, position) -> None:
    q, k, v, k_cache, v_cache = _step_case(batch, heads, kv_heads, hd, position, position + 3, seed=position + hd)
    untouched = k_cache[:, :, position + 1:].clone()
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    expected_k[:, :, position:position + 1], expected_v[:, :, position:position + 1] = k, v
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, expected_k[:, :, :position + 1], expected_v[:, :, :position + 1], enable_gqa=heads > kv_heads)
    assert kernels.attend_step_supported(q, k, v, k_cache)
    out = kernels.attend_step(q, k, v, k_cache, v_cache, position)  # (B, H, 1, hd)
    assert out.shape == (batch, heads, 1, hd)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)  # the new row, nothing else
    assert torch.equal(k_cache[:, :, position + 1:], untouched)


@needs_kernel
def test_attend_step_gives_the_same_result_on_any_thread_count() -> None:
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            q, k, v, k_cache, v_cache = _step_case(2, 12, 4, 64, 300, 301, seed=0)
            results.append(kernels.attend_step(q, k, v, k_cache, v_cache, 300))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])  # each head by one thread, in a fixed order


@needs_kernel
def test_attend_step_declines_what_it_cannot_take() -> None:
    q, k, v, k_cache, _ = _step_case(1, 4, 4, 16, 5, 8, seed=1)
    assert kernels.attend_step_supported(q, k, v, k_cache)
    assert not kernels.attend_step_supported(q.double(), k.double(), v.double(), k_cache.double())
    assert not kernels.attend_step_supported(q, k, v, k_cache.half())  # a lower-precision cache
    two = torch.randn(1, 4, 2, 16)  # (B, H, 2, hd): two new tokens (a prefill)
    assert not kernels.attend_step_supported(two, two, two, k_cache)
    wide = torch.randn(1, 16, 4, 1)[..., 0].transpose(1, 2).unsqueeze(2)  # heads not packed one after another
    assert not kernels.attend_step_supported(wide, wide, wide, k_cache)
    with torch.enable_grad():
        q_grad = q.detach().clone().requires_grad_()
        assert not kernels.attend_step_supported(q_grad, k, v, k_cache)  # no backward: training takes sdpa
    with pytest.raises(ValueError, match="position 8 is beyond the cache's 8 rows"):
        kernels.attend_step(q, k, v, k_cache, k_cache.clone(), 8)


@needs_kernel
@pytest.mark.parametrize(("variant", "batch"), [("gpt2-tiny", 1), ("llama-tiny", 2), ("vaswani-tiny", 1)])
def test_kernel_attention_decodes_like_sdpa(variant: str, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import build, generate, variants

    steps = []
    monkeypatch.setattr(kernels, "attend_step", lambda *args: steps.append(args[-1]) or attend_step(*args))
    model = build(variants.get(variant), seed=0).eval()
    prompt = torch.randint(0, model.config.vocab_size, (batch, 6), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        cache = model.make_cache(batch, 30)
        expected = torch.cat([model(prompt, cache)] + [model(prompt[:, :1] + t, cache) for t in range(20)], dim=1)
        model.set_attention_impl("kernel")
        cache = model.make_cache(batch, 30)
        got = torch.cat([model(prompt, cache)] + [model(prompt[:, :1] + t, cache) for t in range(20)], dim=1)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert steps == [p for p in range(6, 26) for _ in range(model.config.n_layer)]  # every cached step, no prefill
        assert torch.equal(generate(model, prompt, 24), generate(model.set_attention_impl("sdpa"), prompt, 24))
