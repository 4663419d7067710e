"""Peak resident memory of a KV cache filled to a length, measured in a fresh process.

`python -m profiles.rss_probe --variant gpt2-small --cache tq3 --tokens 1024` builds the model,
fills a cache of that kind to `tokens` with random keys and values (`append`, chunk by chunk), then
decodes the last 4 tokens through the model, and prints JSON with the peak RSS growth over all of
it (sampled every millisecond): the cache plus the transients of attending over it. A fresh process per
measurement keeps earlier allocations and freed-but-cached memory out of the figure.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from models import build, variants

from .memory import RssSampler

CACHE_DTYPES = {"raw-fp32": torch.float32, "raw-fp16": torch.float16, "raw-bf16": torch.bfloat16}


def measure(variant: str, cache_kind: str, tokens: int, batch: int = 1, chunk: int = 256, rope: bool = False) -> dict:
    """Peak RSS growth of filling the cache and decoding over it: what the cache (and its transients) cost."""
    cfg = variants.get(variant)
    if rope:
        cfg = cfg.replace(pos="rope")
    model = build(cfg, seed=0).eval()
    prompt = torch.randint(0, cfg.vocab_size, (batch, chunk))
    with torch.inference_mode():
        model(prompt)  # warm: the allocator, thread pools and kernels are in place before the baseline
        sampler = RssSampler().__enter__()
        kind = "raw" if cache_kind.startswith("raw") else cache_kind
        options = {"dtype": CACHE_DTYPES[cache_kind]} if kind == "raw" else {}
        from models import kv_cache

        cache = kv_cache.make(kind, cfg, batch, tokens, **options)
        done, steps = 0, min(4, tokens - 1)
        while done < tokens - steps:  # fill with random keys and values, chunk by chunk
            n = min(chunk, tokens - steps - done)
            for layer in range(cfg.n_layer):
                kv = torch.randn(2, batch, cfg.kv_heads, n, cfg.head_dim)
                cache.append(layer, kv[0], kv[1])
            cache.advance(n)
            done += n
        for _ in range(steps):
            model(torch.randint(0, cfg.vocab_size, (batch, 1)), cache)
        sampler.__exit__(None, None, None)
    return {"variant": variant, "cache": cache_kind, "tokens": tokens, "batch": batch,
            "rss_before": sampler.start_bytes, "rss_peak": sampler.peak_bytes,
            "peak_rss_delta_bytes": sampler.peak_delta_bytes, "cache_nbytes": cache.nbytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiles.rss_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--cache", required=True, help="raw-fp32 | raw-fp16 | raw-bf16 | tq2..4 | uniform2..4")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rope", action="store_true", help="use RoPE positions (no learned-table length limit)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.variant, args.cache, args.tokens, args.batch, rope=args.rope)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
