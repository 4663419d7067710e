"""Peak memory of a KV cache filled to a length, measured in a fresh process (CPU RSS or CUDA allocator).

`python -m profiles.kv_probe --variant gpt2-small --cache tq3 --tokens 1024 [--device cuda] [--batch 8]`
builds the model (random weights), fills a cache of that kind to `tokens` with random keys and values
(`append`, chunk by chunk), then decodes the last 4 tokens through the model, and prints JSON with the
peak memory growth over all of it: the cache plus the transients of attending over it. On the CPU that
is this process's resident set, sampled every millisecond; on CUDA the torch allocator's peak above
what was allocated before (the model), with NVML's device-wide growth beside it. A fresh process per
measurement keeps earlier allocations and freed-but-cached memory out of the figure.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from models import build, kv_cache, variants

from .memory import RssSampler, nvml_used_bytes


def _fill_and_decode(model, cfg, cache_kind: str, tokens: int, batch: int, chunk: int, device: torch.device):
    cache = kv_cache.make(cache_kind, cfg, batch, tokens, device=device)
    done, steps = 0, min(4, tokens - 1)
    gen = torch.Generator(device=device).manual_seed(0)
    while done < tokens - steps:  # fill with random keys and values, chunk by chunk
        n = min(chunk, tokens - steps - done)
        for layer in range(cfg.n_layer):
            kv = torch.randn(2, batch, cfg.kv_heads, n, cfg.head_dim, device=device, generator=gen)  # (2, B, H, n, D)
            cache.append(layer, kv[0], kv[1])
        cache.advance(n)
        done += n
    for _ in range(steps):
        model(torch.randint(0, cfg.vocab_size, (batch, 1), device=device), cache)
    return cache


def measure(variant: str, cache_kind: str, tokens: int, batch: int = 1, chunk: int | None = None,
            rope: bool = False, device: str = "cpu") -> dict:
    """Peak memory growth of filling the cache and decoding over it: what the cache (and its transients) cost."""
    kv_cache.spec(cache_kind)  # an unknown kind raises, naming the valid ones
    dev = torch.device(device)
    cfg = variants.get(variant)
    if rope:
        cfg = cfg.replace(pos="rope")
    if not rope:
        build(cfg, device="meta").check_positions(tokens)
    chunk = chunk or (2048 if dev.type == "cuda" else 256)
    model = build(cfg, seed=0, device=dev).eval()
    out = {"variant": variant, "cache": cache_kind, "tokens": tokens, "batch": batch, "device": dev.type,
           "pos": cfg.pos}
    with torch.inference_mode():
        model(torch.randint(0, cfg.vocab_size, (batch, min(chunk, 256)), device=dev))  # warm: kernels, pools
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            alloc0, nvml0 = torch.cuda.memory_allocated(dev), nvml_used_bytes(dev.index or 0)
            cache = _fill_and_decode(model, cfg, cache_kind, tokens, batch, chunk, dev)
            torch.cuda.synchronize(dev)
            nvml1 = nvml_used_bytes(dev.index or 0)
            out.update(peak_delta_bytes=torch.cuda.max_memory_allocated(dev) - alloc0, measure="cuda_allocator",
                       nvml_delta_bytes=None if nvml0 is None or nvml1 is None else nvml1 - nvml0,
                       device_name=torch.cuda.get_device_name(dev))
        else:
            with RssSampler() as sampler:
                cache = _fill_and_decode(model, cfg, cache_kind, tokens, batch, chunk, dev)
            out.update(peak_delta_bytes=sampler.peak_delta_bytes, measure="rss", rss_before=sampler.start_bytes,
                       rss_peak=sampler.peak_bytes)
    out["cache_nbytes"] = cache.nbytes
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiles.kv_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--cache", required=True, help=" | ".join(kv_cache.kinds()))
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--rope", action="store_true", help="use RoPE positions (no learned-table length limit)")
    args = parser.parse_args(argv)
    try:
        result = measure(args.variant, args.cache, args.tokens, args.batch, rope=args.rope, device=args.device)
    except ValueError as exc:  # unknown variant or kind, a length past the position table
        parser.error(str(exc))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
