"""torch.compile's decode as its users run it (the gpt-fast recipe): fixed shapes over a static cache.

`torch.compile(model, dynamic=True)` over a cache whose position is a Python int is no use: the position
is guarded, every step recompiles until the limit, then it runs eager. Here instead:
- `StaticKVCache` is a raw cache laid out position first, with its position mirrored in a 0-d int64
  tensor.
- `CompiledDecoder` compiles one function of the model for cached forwards: the new keys and values
  are written at the position tensor (`index_copy_`), and attention reads the first `bucket` slots of
  the buffer under a mask. `bucket` is the smallest power of two (at least `MIN_BUCKET`) that holds
  the step's end (the cache's buffer is a power of two long too), so a step costs what its length needs (the O(T) of
  decode stays visible) and every step inside one bucket shares one compiled graph: a decode of T
  tokens compiles about log2(T / MIN_BUCKET) + 1 graphs.
- Prompts run the eager model over the same cache by default, as transformers' compiled `generate` runs
  its prefill and as gpt-fast does unless asked to compile it: a prompt is one forward per request, and
  compiling it (with freezing and max-autotune, ~20 s for GPT-2 124M on a CPU, no graph cache) buys
  little. With `compile_prefill=True` prompts compile too (their length marked dynamic), one graph per
  bucket they end in.
  Forwards without a cache (recomputing the prefix) compile once with dynamic shapes (without
  max-autotune, whose GEMM tuning over dynamic shapes takes minutes).
- Everything compiles with `fullgraph=True`, and hitting the recompile limit raises: what cannot be
  compiled fails loudly rather than running eager in silence. `compile_events` counts compilations.
- With CUDA graphs (inductor's `triton.cudagraphs`, what mode "reduce-overhead" turns on), the cache's
  slices are marked as static addresses, so a graph replays over the cache in place; cached steps are
  graphed, uncached forwards (a shape per prefix length) are not.

What runs is inductor's code (or the backend given); archbench contributes the static cache layout only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .attention import causal_attention
from .config import ArchConfig
from .gpt import GPT
from .kv_base import AttendingCache, BucketedCache, BufferedKVCache
from .raw_cache import RawBucketView

MIN_BUCKET = 64  # the smallest attended slice of the cache, in tokens
RECOMPILE_LIMIT = 512  # graphs per compiled function: buckets x prompt lengths x models of one process


def bucket_for(end: int) -> int:
    """The slots a step ending at `end` attends: the smallest power of two >= end, at least MIN_BUCKET."""
    size = MIN_BUCKET
    while size < end:
        size *= 2
    return size


class StaticKVCache(BufferedKVCache):
    """Keys and values in (slots, n_layer, B, Hkv, hd) buffers, slots = `bucket_for(max_len)`, position first:
    the first `bucket` slots are one contiguous block whose strides do not depend on the cache's length,
    so caches of every length share the compiled graph of each bucket. The position is also kept in a
    0-d int64 tensor (`index`) that a compiled step reads (the Python `position` stays the host's
    bookkeeping). It holds at most `max_len` tokens, as asked."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        super().__init__(batch, max_len, 2 * n_layer * batch * n_kv_head * head_dim)
        self.slots = bucket_for(max_len)
        shape = (self.slots, n_layer, batch, n_kv_head, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("index", torch.zeros((), dtype=torch.long, device=device), persistent=False)

    @property
    def bytes_per_token(self) -> int:
        return self.k[0].numel() * self.k.element_size() * 2

    @property
    def nbytes(self) -> int:
        """The keys' and values' buffers as allocated (the 8-byte position tensor is not cache content)."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    @property
    def bits_per_coordinate(self) -> float:
        return self.nbytes * 8 / (self.slots * self.coordinates_per_token)

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        start, end = self._span(k)
        self.k[start:end, layer] = k.permute(2, 0, 1, 3)  # (T, B, Hkv, hd) written in place
        self.v[start:end, layer] = v.permute(2, 0, 1, 3)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
        """Eager attention over what is stored (a compiled step uses `_BucketView` instead)."""
        start, end = self.position, self.position + k.shape[-2]
        self.append(layer, k, v)
        keys = self.k[:end, layer].permute(1, 2, 0, 3).to(q.dtype)  # (B, Hkv, end, hd)
        values = self.v[:end, layer].permute(1, 2, 0, 3).to(q.dtype)  # (B, Hkv, end, hd)
        return causal_attention(q, keys, values, q_start=start, impl=impl)  # (B, H, T, hd)

    def advance(self, n_tokens: int) -> None:
        super().advance(n_tokens)
        self.index.fill_(self.position)

    def reset(self) -> None:
        super().reset()
        self.index.zero_()

    def bucket_view(self, bucket: int) -> RawBucketView:
        """The first `bucket` slots (bucket, n_layer, B, Hkv, hd): the same memory and strides for every length."""
        return RawBucketView(self.k[:bucket], self.v[:bucket], self.index, position_first=True)


class _CachedStep(nn.Module):
    """The model's cached forward over the first slots of a static cache: the module torch.compile compiles
    (the model's weights are its attributes, so inductor's freezing can fold and prepack them)."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: Tensor, view: AttendingCache) -> Tensor:
        return self.model(idx, view)  # (B, T, vocab)


class CompileError(RuntimeError):
    """torch.compile could not compile a forward (its own message); never replaced by an eager run."""


compile_events: list[str] = []  # one entry per graph compiled through `counting` (tests and records)


def counting(backend: Any) -> Any:
    """A torch.compile backend that compiles each graph with `backend` (a name such as "inductor", or a
    callable) and records it in `compile_events` once compiled."""
    from torch._dynamo import lookup_backend

    inner = lookup_backend(backend) if isinstance(backend, str) else backend

    def compile_graph(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
        compiled = inner(gm, example_inputs)  # raises when dynamo restarts its analysis: not counted then
        compile_events.append(f"graph {len(compile_events) + 1}: {len(gm.graph.nodes)} nodes")
        return compiled

    return compile_graph


class CompiledDecoder:
    """A `models.Decoder` whose forwards run torch.compile'd code: cached steps over a `StaticKVCache` (static
    shapes per bucket), uncached forwards with dynamic shapes. Prompts (more than one token over a cache) run
    the eager model, unless `compile_prefill`: then their length is marked dynamic, so prompts of every length
    share their bucket's graph. `backend` and `options` go to torch.compile as given (inductor's options,
    e.g. {"freezing": True, "max_autotune": True})."""

    def __init__(self, model: GPT, backend: Any = "inductor", options: dict | None = None, *,
                 static_cache: bool | None = None, compile_prefill: bool = False) -> None:
        if options and backend != "inductor":
            raise ValueError(f"compile options are inductor's; backend {backend!r} takes none")
        self.options = dict(options or {})
        # CUDA graphs replay fixed addresses: the cache's slices are marked static (the same memory every step,
        # written in place by the graph) and logits are copied out before the next replay overwrites them.
        # Not with freezing: freezing folds static inputs into constants.
        self.static_cache = bool(self.options.get("triton.cudagraphs")) if static_cache is None else static_cache
        if self.static_cache and self.options.get("freezing"):
            raise ValueError("a static-address cache cannot be compiled with freezing (it would fold the cache into "
                             "constants); drop one of them")
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT)
        torch._dynamo.config.fail_on_recompile_limit_hit = True  # never fall back to eager in silence
        self.model = model
        self.config: ArchConfig = model.config
        self.compile_prefill = compile_prefill
        counted = counting(backend)
        self._cached = torch.compile(_CachedStep(model), backend=counted, fullgraph=True, dynamic=False)
        self._uncached = torch.compile(model, backend=counted, fullgraph=True, dynamic=True)

    def check_positions(self, end: int) -> None:
        self.model.check_positions(end)

    def make_cache(self, batch: int, max_len: int) -> StaticKVCache:
        """A static cache of the model's dtype on its device."""
        param = next(self.model.parameters())
        cfg = self.config
        with torch.inference_mode(False):  # ordinary tensors in any mode (`BufferedKVCache`)
            return StaticKVCache(cfg.n_layer, batch, cfg.kv_heads, cfg.head_dim, max_len, dtype=param.dtype,
                                 device=param.device)

    def __call__(self, idx: Tensor, cache: Any = None) -> Tensor:
        """Logits (B, T, vocab) of idx (B, T); with `cache` (from `make_cache`, or a KV cache kind that offers a
        bucket view: `models.kv_base.BucketedCache`), appended at its position."""
        # Always in inference mode, whatever the caller's: dynamo guards on the grad mode and on the kind of
        # tensor it is given (inputs and views made here), so another mode would compile every graph again.
        with torch.inference_mode():
            return self._call(idx, cache)

    def _call(self, idx: Tensor, cache: Any) -> Tensor:
        B, T = idx.shape
        idx = idx.clone(memory_format=torch.contiguous_format)  # a view's strides would be guarded: one graph each
        if cache is None:
            self.model.check_positions(T)
            return self._run(self._uncached, idx)
        if not isinstance(cache, BucketedCache):
            raise TypeError(f"a compiled decoder runs over caches with a bucket view (its make_cache's StaticKVCache "
                            f"or a kind of models.kv_cache that has one), not {type(cache).__name__}")
        if T > 1 and not self.compile_prefill:
            return self.model(idx, cache)  # the eager prefill, into the same cache (B, T, vocab)
        cache.check_append(B, T)
        self.model.check_positions(cache.position + T)
        bucket = bucket_for(cache.position + T)
        if T > 1:  # a prompt: one graph per bucket serves every length from 2
            torch._dynamo.mark_dynamic(idx, 1, min=2, max=bucket)
        view = cache.bucket_view(bucket)  # the first `bucket` positions: the same memory every step of the bucket
        if self.static_cache:
            for t in vars(view).values():
                if isinstance(t, Tensor):
                    torch._dynamo.mark_static_address(t)
        logits = self._run(self._cached, idx, view)
        cache.advance(T)
        return logits

    def _run(self, compiled: Any, *args: Any) -> Tensor:
        """Call a compiled forward with inductor's config set to `options` (set around the call: freezing,
        for one, is read outside the compiler, and a compile happens at a graph's first call); `__call__`
        has entered inference mode. Forwards without a cache compile without max-autotune: tuning GEMMs
        over dynamic shapes takes minutes."""
        import torch._inductor.config as inductor_config
        from torch._dynamo.exc import FailOnRecompileLimitHit, TorchDynamoException

        options = self.options if compiled is self._cached else {  # no CUDA graph per prefix length either
            k: v for k, v in self.options.items() if not k.startswith("max_autotune") and k != "triton.cudagraphs"}
        try:
            with inductor_config.patch(options):
                out = compiled(*args)
            return out.clone() if options.get("triton.cudagraphs") else out  # a replay reuses its output memory
        except (TorchDynamoException, FailOnRecompileLimitHit) as exc:  # unsupported code, backend, recompiles
            raise CompileError(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:800]}") from exc
