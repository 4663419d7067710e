"""archbench's own single-row product (models/gemv.c): built at first use, exact against torch, and
unavailable with a reason where no compiler can build it."""

from __future__ import annotations

import pytest
import torch

from models import gemv
from models.layout import RowGemvLinear, to_row_gemv

needs_kernel = pytest.mark.skipif(gemv.unavailable_reason() is not None,
                                  reason=f"archbench's gemv kernel is unavailable: {gemv.unavailable_reason()}")


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
    torch.testing.assert_close(gemv.gemv(weight, x, b), expected, atol=1e-5 * in_features**0.5, rtol=1e-5)


@needs_kernel
def test_gemv_uses_every_thread_count_alike() -> None:
    weight, x = torch.randn(1000, 300), torch.randn(300)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(gemv.gemv(weight, x))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])  # each row is summed by one thread, in order


@needs_kernel
def test_gemv_rejects_what_it_cannot_read() -> None:
    weight = torch.randn(8, 4)
    with pytest.raises(ValueError, match="x as a contiguous CPU float32 tensor of 4 elements"):
        gemv.gemv(weight, torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight as a contiguous"):
        gemv.gemv(weight.t(), torch.randn(8))
    with pytest.raises(ValueError, match="bias as a contiguous CPU float32 tensor of 8 elements"):
        gemv.gemv(weight, torch.randn(4), torch.randn(7))


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
def fresh_gemv(monkeypatch: pytest.MonkeyPatch):
    """The kernel looked up anew under the test's environment, and again after it is restored."""
    gemv._load.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    gemv._load.cache_clear()


def test_gemv_without_a_compiler_is_unavailable_with_the_reason(fresh_gemv, tmp_path) -> None:
    from bench.backends import get

    fresh_gemv.setenv("CC", "no-such-cc")
    fresh_gemv.setenv("ARCHBENCH_CACHE_DIR", str(tmp_path))
    reason = gemv.unavailable_reason()
    assert reason is not None and "'no-such-cc' is not on PATH" in reason
    assert "gemv" not in get("torch-cpu").layouts(torch.float32)
    with pytest.raises(RuntimeError, match="gemv kernel is unavailable: no C compiler"):
        gemv.gemv(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(RuntimeError, match="the gemv layout is unavailable here: no C compiler"):
        to_row_gemv(torch.nn.Linear(2, 2))


def test_gemv_reports_a_compiler_that_cannot_build_it(fresh_gemv, tmp_path) -> None:
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'fakecc: error: unsupported option -fopenmp' >&2\nexit 1\n")
    fake.chmod(0o755)
    fresh_gemv.setenv("CC", str(fake))
    fresh_gemv.setenv("ARCHBENCH_CACHE_DIR", str(tmp_path / "cache"))
    reason = gemv.unavailable_reason()
    assert reason is not None and "could not build gemv.c" in reason and "unsupported option -fopenmp" in reason
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))  # nothing half-built left behind


def test_gemv_reports_a_cache_directory_it_cannot_write(fresh_gemv, tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the cache directory's parent is a file: nothing can be created below it
    fresh_gemv.setenv("ARCHBENCH_CACHE_DIR", str(blocker / "cache"))
    reason = gemv.unavailable_reason()
    if reason and "not on PATH" in reason:
        pytest.skip(reason)
    assert reason is not None and "could not be built into" in reason
