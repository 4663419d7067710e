"""TurboQuant's MSE quantizer (Zandieh et al., arXiv 2504.19874): rotate, Lloyd-Max per coordinate, pack.

x -> norm = |x|, u = x / norm -> y = R u with R a seeded random orthogonal matrix -> each coordinate
of y quantized with one Lloyd-Max codebook -> codes packed densely (eight 3-bit codes in 3 bytes)
plus the norm (fp16 by default). Dequantize: codebook lookup, y -> R^T y, times the norm.

The codebook: after a uniform random rotation, one coordinate of a unit vector in R^d follows the
density f(x) ~ (1 - x^2)^((d - 3) / 2) on [-1, 1] (a Beta(d-1/2, d-1/2) on [0, 1], rescaled), whose
variance is 1/d. We solve Lloyd-Max for that exact density at the quantizer's dimension rather than
for its Gaussian limit N(0, 1/d): the two agree closely at d = 64 or 128, but the exact density is
what the rotation produces at every d, small head dimensions included. `lloyd_max_gaussian` solves
the N(0, 1) case, which docs/references.md tabulates, so the solver itself can be checked.

`QJLSketch` is the paper's second stage (TurboQuant_prod): a 1-bit sketch sign(S r) of a residual r
with S a seeded Gaussian matrix, plus |r|, from which <y, r> is estimated without bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import Tensor, nn

SUPPORTED_BITS = (1, 2, 3, 4)


def _lloyd_max(cdf, first_moment, lo: float, hi: float, levels: np.ndarray, iters: int = 200_000,
               tol: float = 1e-14) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd-Max iterations from a distribution's CDF and partial first moment M(t) = E[x; x <= t].

    Alternates the two optimality conditions until the levels move by less than `tol`: each
    threshold is the midpoint of its neighbouring levels, each level the centroid of its cell.
    """
    for _ in range(iters):
        thresholds = (levels[1:] + levels[:-1]) / 2
        edges = np.concatenate(([lo], thresholds, [hi]))
        mass = cdf(edges[1:]) - cdf(edges[:-1])
        moment = first_moment(edges[1:]) - first_moment(edges[:-1])
        new = np.where(mass > 0, moment / np.maximum(mass, 1e-300), levels)
        moved = np.max(np.abs(new - levels))
        levels = new
        if moved < tol:
            break
    return levels, (levels[1:] + levels[:-1]) / 2


def _symmetric(levels: np.ndarray) -> np.ndarray:
    """Average a codebook with its mirror image (the densities are symmetric; this removes drift)."""
    return (levels - levels[::-1]) / 2


def lloyd_max_gaussian(bits: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd-Max codebook of N(0, 1) from exact Gaussian integrals: levels, thresholds, MSE."""
    erf = np.vectorize(math.erf)

    def cdf(t: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + erf(np.asarray(t) / math.sqrt(2.0)))

    def first_moment(t: np.ndarray) -> np.ndarray:  # E[x; x <= t] = -phi(t)
        return -np.exp(-0.5 * np.asarray(t) ** 2) / math.sqrt(2.0 * math.pi)

    n = 2**bits
    levels, thresholds = _lloyd_max(cdf, first_moment, -np.inf, np.inf, np.linspace(-2.0, 2.0, n))
    levels = _symmetric(levels)
    thresholds = (levels[1:] + levels[:-1]) / 2
    # MSE = E[x^2] - sum over cells of mass * level^2 (levels are centroids)
    edges = np.concatenate(([-np.inf], thresholds, [np.inf]))
    mass = cdf(edges[1:]) - cdf(edges[:-1])
    return levels, thresholds, float(1.0 - (mass * levels**2).sum())


@cache
def lloyd_max_sphere(bits: int, dim: int, grid: int = 200_001) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd-Max codebook of one coordinate of a random unit vector in R^dim; MSE per coordinate.

    The density (1 - x^2)^((dim - 3) / 2) is integrated numerically (cumulative trapezoid on a fine
    grid, linear interpolation between grid points).
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported; allowed values: {', '.join(map(str, SUPPORTED_BITS))}")
    if dim < 3:
        raise ValueError(f"dim={dim} is too small; allowed values: an integer >= 3")
    x = np.linspace(-1.0, 1.0, grid)
    density = np.power(np.clip(1.0 - x**2, 0.0, None), (dim - 3) / 2)

    def cumulative(values: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum((values[1:] + values[:-1]) / 2 * np.diff(x))))

    cum_mass, cum_moment, cum_second = cumulative(density), cumulative(density * x), cumulative(density * x**2)
    total = cum_mass[-1]

    def cdf(t: np.ndarray) -> np.ndarray:
        return np.interp(t, x, cum_mass) / total

    def first_moment(t: np.ndarray) -> np.ndarray:
        return np.interp(t, x, cum_moment) / total

    gaussian_levels, _, _ = lloyd_max_gaussian(bits)
    levels, _ = _lloyd_max(cdf, first_moment, -1.0, 1.0, gaussian_levels / math.sqrt(dim))
    levels = _symmetric(levels)
    thresholds = (levels[1:] + levels[:-1]) / 2
    edges = np.concatenate(([-1.0], thresholds, [1.0]))
    mass = cdf(edges[1:]) - cdf(edges[:-1])
    second = cum_second[-1] / total
    return levels, thresholds, float(second - (mass * levels**2).sum())


def random_rotation(dim: int, seed: int = 0) -> Tensor:
    """A seeded random orthogonal (dim, dim) matrix: QR of a Gaussian matrix with Q *= sign(diag(R))."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).float()  # sign fix: Haar-distributed


def packed_bytes(n: int, bits: int) -> int:
    """Bytes that `pack_codes` uses for n codes: `bits` bytes per group of 8 (the last group zero-padded)."""
    return -(-n // 8) * bits


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes (..., n) with values < 2**bits into (..., ceil(n / 8) * bits) bytes, densely.

    Groups of 8 codes become `bits` bytes (eight 3-bit codes in 3 bytes); a last partial group is
    padded with zero codes.
    """
    n = codes.shape[-1]
    if n % 8:
        codes = torch.nn.functional.pad(codes, (0, 8 - n % 8))
    groups = codes.reshape(*codes.shape[:-1], -1, 8).to(torch.int64)  # (..., ceil(n/8), 8)
    shifts = torch.arange(8, device=codes.device, dtype=torch.int64) * bits  # (8,)
    words = (groups << shifts).sum(-1)  # (..., n/8): 8 * bits significant bits
    byte_shifts = torch.arange(bits, device=codes.device, dtype=torch.int64) * 8  # (bits,)
    packed = (words[..., None] >> byte_shifts) & 0xFF  # (..., n/8, bits)
    return packed.to(torch.uint8).reshape(*codes.shape[:-1], packed_bytes(n, bits))


def unpack_codes(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of `pack_codes`: (..., ceil(n / 8) * bits) bytes -> (..., n) int64 codes."""
    grouped = packed.reshape(*packed.shape[:-1], -1, bits).to(torch.int64)  # (..., ceil(n/8), bits)
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8
    words = (grouped << byte_shifts).sum(-1)  # (..., n/8)
    shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits
    codes = (words[..., None] >> shifts) & (2**bits - 1)  # (..., ceil(n/8), 8)
    return codes.reshape(*packed.shape[:-1], -1)[..., :n]


@dataclass(frozen=True)
class QuantizedVectors:
    """Packed codes and per-vector norms of a batch of quantized vectors."""

    codes: Tensor  # (..., ceil(dim / 8) * bits) uint8
    norms: Tensor  # (...,) norm_dtype
    bits: int
    dim: int

    @property
    def nbytes(self) -> int:
        """Every byte held: codes and norms."""
        return self.codes.numel() * self.codes.element_size() + self.norms.numel() * self.norms.element_size()


def quantize_rotated(x: Tensor, rotation: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """TurboQuant's codes (..., dim) of x (..., dim): the bucket of each coordinate of its rotated unit
    direction among `thresholds`; and its norms (...,) in fp32. Tensors in, so a compiled step can take a
    quantizer's rotation and thresholds as inputs."""
    x32 = x.float()
    norms = x32.norm(dim=-1)  # (...,)
    unit = x32 / norms.clamp_min(torch.finfo(torch.float32).tiny)[..., None]  # (..., dim)
    codes = torch.bucketize(unit @ rotation.T, thresholds)  # (..., dim) in [0, 2^b)
    return codes, norms


class TurboQuantizer(nn.Module):
    """TurboQuant's MSE quantizer of vectors of `dim` at `bits` per coordinate (plus one norm per vector)."""

    def __init__(self, dim: int, bits: int, seed: int = 0, norm_dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or bits not in SUPPORTED_BITS:
            raise ValueError(f"bits={bits} is not supported; allowed values: {', '.join(map(str, SUPPORTED_BITS))}")
        if dim < 3:
            raise ValueError(f"dim={dim} is not supported; allowed values: an integer >= 3")
        self.dim, self.bits, self.seed, self.norm_dtype = dim, bits, seed, norm_dtype
        levels, thresholds, mse = lloyd_max_sphere(bits, dim)
        self.mse_per_coordinate = mse
        self.register_buffer("rotation", random_rotation(dim, seed), persistent=False)  # (dim, dim)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)  # (2^b,)
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32), persistent=False)

    @property
    def expected_mse(self) -> float:
        """E|u - dequantize(quantize(u))|^2 for unit vectors u, from the codebook (= dim * MSE per coordinate)."""
        return self.dim * self.mse_per_coordinate

    def rotate(self, x: Tensor) -> Tensor:
        """y = R x for x (..., dim)."""
        return x @ self.rotation.T.to(x.dtype)

    def unrotate(self, y: Tensor) -> Tensor:
        """x = R^T y for y (..., dim)."""
        return y @ self.rotation.to(y.dtype)

    def quantize_rotated(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Integer codes (..., dim) of the rotated unit direction of x, and the norms (...,) in fp32."""
        return quantize_rotated(x, self.rotation, self.thresholds)

    def quantize(self, x: Tensor) -> QuantizedVectors:
        """Quantize x (..., dim) to packed codes and norms."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"input's last dimension is {x.shape[-1]}, this quantizer's dim is {self.dim}")
        codes, norms = self.quantize_rotated(x)
        return QuantizedVectors(pack_codes(codes, self.bits), norms.to(self.norm_dtype), self.bits, self.dim)

    def dequantize_rotated(self, codes: Tensor) -> Tensor:
        """Codebook values (..., dim) of codes, still in the rotated basis (unit scale)."""
        return self.levels[codes]

    def dequantize(self, q: QuantizedVectors) -> Tensor:
        """Reconstruct (..., dim) fp32 vectors from `quantize`'s result."""
        codes = unpack_codes(q.codes, q.bits, q.dim)  # (..., dim)
        return self.unrotate(self.dequantize_rotated(codes)) * q.norms.float()[..., None]


def gaussian_matrix(dim: int, seed: int) -> Tensor:
    """A seeded (dim, dim) matrix of independent N(0, 1) entries (QJL's projection S)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, dim, generator=generator, dtype=torch.float64).float()


class QJLSketch(nn.Module):
    """Quantized Johnson-Lindenstrauss: r -> (sign(S r), |r|), one bit per coordinate plus a norm.

    For any y, |r| sqrt(pi/2) / dim <S y, sign(S r)> is an unbiased estimate of <y, r> over the draw of S
    (E[sign(<s, r>) <s, y>] = sqrt(2/pi) <y, r> / |r| for a Gaussian row s), with variance at most
    pi/(2 dim) |y|^2 |r|^2.
    """

    def __init__(self, dim: int, seed: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("projection", gaussian_matrix(dim, seed), persistent=False)  # (dim, dim): S

    def signs(self, r: Tensor) -> Tensor:
        """sign(S r) of r (..., dim) as 0/1 codes (1: positive), ready for `pack_codes(codes, 1)`."""
        return (r.float() @ self.projection.T > 0).to(torch.int64)  # (..., dim)

    def project(self, y: Tensor) -> Tensor:
        """S y for queries y (..., dim): computed once per query, then dotted with every stored sketch."""
        return y.float() @ self.projection.T  # (..., dim)

    def inner_products(self, projected: Tensor, codes: Tensor, norms: Tensor) -> Tensor:
        """Estimates of <y, r> (..., n) from `project(y)` (..., m, dim), sketches `codes` (..., n, dim) and
        residual norms (..., n): |r| sqrt(pi/2) / dim <S y, sign(S r)>."""
        signs = codes.float() * 2 - 1  # (..., n, dim) in {-1, +1}
        return projected @ signs.transpose(-1, -2) * norms.float()[..., None, :] * math.sqrt(math.pi / 2) / self.dim
