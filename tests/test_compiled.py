"""torch.compile's decode (`models.compiled`): the static cache and the compiled step give the eager
model's logits at prefill and every step, compile a bounded number of graphs, and fail loudly.

Switch combinations are traced by dynamo with the `eager` backend (the graph capture, the static cache's
in-place writes and masks, at trace cost): an all-pairs subset in every run, all 36 with `--thorough`.
Inductor itself with freezing, as the engine runs it (cold compiles of seconds per graph on a CPU, and with
freezing no graph cache), runs in the thorough tier on the combination with the most distinct parts and the
quantized caches; on every combination with ARCHBENCH_INDUCTOR_PARITY=1 and --thorough (about ten
minutes cold on two cores).
"""

from __future__ import annotations

import os

import pytest
import torch

from bench import backends
from models import build, kv_cache
from models.compiled import MIN_BUCKET, CompiledDecoder, CompileError, StaticKVCache, bucket_for, compile_events
from models.kv_base import CacheFullError

from .helpers import every_switch_tiered, tiny_config

PROMPT = 8
STEPS = MIN_BUCKET  # crosses from the first bucket into the second


def _side_by_side(model, decoder, eager_cache, compiled_cache, prompt, steps: int, atol: float) -> None:
    """Greedy decode with the eager model over `eager_cache` and the compiled decoder over `compiled_cache`:
    logits within `atol` at the prompt and every step, identical tokens."""
    with torch.inference_mode():
        expected, got = model(prompt, eager_cache), decoder(prompt, compiled_cache)
        torch.testing.assert_close(got, expected, atol=atol, rtol=0)
        token = expected[:, -1:].argmax(-1)  # (B, 1)
        for _ in range(steps):
            expected, got = model(token, eager_cache), decoder(token, compiled_cache)
            torch.testing.assert_close(got, expected, atol=atol, rtol=0)
            assert torch.equal(got.argmax(-1), expected.argmax(-1))
            token = expected[:, -1:].argmax(-1)


def _parity(model, decoder, steps: int = STEPS, atol: float = 1e-4, uncached: bool = True) -> None:
    """The model's own cache against the decoder's static one (`_side_by_side`); and (`uncached`) a forward
    without a cache."""
    prompt = torch.randint(0, model.config.vocab_size, (2, PROMPT), generator=torch.Generator().manual_seed(0))
    _side_by_side(model, decoder, model.make_cache(2, PROMPT + steps), decoder.make_cache(2, PROMPT + steps), prompt,
                  steps, atol)
    if uncached:  # dynamic shapes
        full = torch.randint(0, model.config.vocab_size, (2, 21), generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            torch.testing.assert_close(decoder(full), model(full), atol=atol, rtol=0)


@pytest.mark.parametrize("switches", every_switch_tiered())
def test_compiled_decode_every_switch(switches) -> None:
    """Prefill and 20 steps of every combination within 1e-4 of eager (with inductor also an uncached forward)."""
    inductor = os.environ.get("ARCHBENCH_INDUCTOR_PARITY") == "1"
    model = build(tiny_config(max_seq_len=PROMPT + STEPS, **switches), seed=0).eval()
    _parity(model, CompiledDecoder(model, backend="inductor" if inductor else "eager"), steps=20, uncached=inductor)


@pytest.mark.thorough  # inductor with freezing: compiled again every run (no graph cache)
def test_inductor_decode_matches_eager() -> None:
    """Inductor's code with freezing (weights folded into the graph, as the engine runs it): prefill, every
    step across two buckets and an uncached forward within 1e-4. The engine's max-autotune GEMMs (minutes
    to tune cold) are checked by the benchmarks' own correctness checks before they time anything."""
    engine = backends.get("torch-compile")
    if engine.unavailable_reason():
        pytest.skip(engine.unavailable_reason())
    model = build(tiny_config(pos="rope", norm="pre_rms", mlp="swiglu", n_kv_head=2, max_seq_len=PROMPT + STEPS),
                  seed=0).eval()
    _parity(model, CompiledDecoder(model, options={"freezing": True}))


@pytest.mark.parametrize(("static_cache", "compile_prefill"), [(False, False), (False, True), (True, False)],
                         ids=["cache-as-input", "compiled-prompts", "cache-at-static-address"])
def test_graphs_per_bucket_are_counted_and_shared(static_cache: bool, compile_prefill: bool) -> None:
    """A decode of 200 tokens compiles one graph per bucket it crosses (64, 128, 256), and with
    `compile_prefill` one for the prompt (else the prompt runs eager: no graph); caches of other lengths and
    prompts of other lengths, fed as views of a token buffer the way the decode loop does, reuse every one
    of them. The same with the cache's slices marked as static addresses (the CUDA-graph path), whose
    steps after an eager prompt must equal eager's; and compiled prompts equal eager's too."""
    model = build(tiny_config(pos="rope", max_seq_len=512), seed=0).eval()
    decoder = CompiledDecoder(model, backend="eager", static_cache=static_cache, compile_prefill=compile_prefill)
    if static_cache or compile_prefill:
        _parity(model, decoder, uncached=False)
    before, counts = len(compile_events), []
    with torch.inference_mode():
        for prompt_len, steps in ((PROMPT, 200), (5, 100), (12, 30)):  # buffers of 256, 128 and 64 slots
            tokens = torch.zeros(1, prompt_len + steps, dtype=torch.long)  # (1, P + T): views of it are strided
            cache = decoder.make_cache(1, prompt_len + steps)
            logits = decoder(tokens[:, :prompt_len], cache)
            for step in range(steps):
                end = prompt_len + step + 1
                tokens[:, end - 1] = logits[:, -1].argmax(-1)
                logits = decoder(tokens[:, end - 1 : end], cache)
            counts.append(len(compile_events) - before)
    assert counts == [compile_prefill + 3] * 3  # (the prompt's, bucket 64) steps in buckets 64, 128, 256; then none
    assert [bucket_for(end) for end in (1, 64, 65, 128, 129, 300)] == [64, 64, 128, 128, 256, 512]


def test_cuda_graph_options_keep_the_cache_at_a_static_address_and_refuse_freezing() -> None:
    model = build(tiny_config(), seed=0).eval()
    assert CompiledDecoder(model, options={"triton.cudagraphs": True}).static_cache
    assert not CompiledDecoder(model, options={"freezing": True}).static_cache
    with pytest.raises(ValueError, match="freezing"):
        CompiledDecoder(model, options={"triton.cudagraphs": True, "freezing": True})
    assert backends.get("torch-compile-cuda").compile_options()["options"] == {"triton.cudagraphs": True}


def test_static_cache_bookkeeping() -> None:
    cfg = tiny_config()
    cache = StaticKVCache(cfg.n_layer, 2, cfg.kv_heads, cfg.head_dim, 40)
    assert cache.slots == MIN_BUCKET and cache.max_len == 40
    per_token = 2 * cfg.n_layer * 2 * cfg.kv_heads * cfg.head_dim * 4
    assert cache.bytes_per_token == per_token and cache.nbytes == per_token * MIN_BUCKET
    assert cache.bits_per_coordinate == 32.0
    cache.check_append(2, 40)
    with pytest.raises(CacheFullError, match="max_len"):  # the asked length, not the buffer's slots
        cache.check_append(2, 41)
    cache.advance(5)
    assert int(cache.index) == 5 == cache.position
    cache.reset()
    assert int(cache.index) == 0 == cache.position


def test_compiled_decoder_refuses_caches_without_a_bucket_view_and_learned_overflow() -> None:
    model = build(tiny_config(), seed=0).eval()
    decoder = CompiledDecoder(model, backend="eager")
    with pytest.raises(TypeError, match=r"bucket view.*TurboQuantProdKVCache"):
        decoder(torch.zeros(1, 2, dtype=torch.long), kv_cache.make("tq3-prod", model.config, 1, 8))
    with pytest.raises(ValueError, match="learned position table holds 48"):
        decoder(torch.zeros(1, 49, dtype=torch.long))


def test_a_failed_compile_raises_never_runs_eager() -> None:
    def broken(gm, example_inputs):
        raise RuntimeError("no code for this graph")

    model = build(tiny_config(), seed=0).eval()
    decoder = CompiledDecoder(model, backend=broken)
    with pytest.raises(CompileError, match="no code for this graph"), torch.inference_mode():
        decoder(torch.zeros(1, 1, dtype=torch.long), decoder.make_cache(1, 8))


def test_torch_compile_backend_prepares_a_compiled_decoder() -> None:
    backend = backends.get("torch-compile")
    assert backend.supports(torch.float32, backends.DECODE) is None
    assert backend.supports(torch.float32, backends.CACHE_KINDS) is None
    cfg = tiny_config()
    assert backends.cache_reason(backend, kv_cache.spec("tq3").probe(cfg)) is None
    assert "no bucket view" in backends.cache_reason(backend, kv_cache.spec("tq3-prod").probe(cfg))
    assert backends.cache_reason(backends.get("torch-cpu"), kv_cache.spec("tq3-prod").probe(cfg)) is None
    assert "cache kinds" in backends.cache_reason(backends.get("onnxruntime"), kv_cache.spec("tq3").probe(cfg))
    settings = backend.settings()
    assert settings["backend"] == "inductor" and "bucket" in settings["decode"]
    assert "freezing=True" in settings["options"]
    assert not backend.own_prefill and settings["prefill"].startswith("eager")  # as transformers' generate
    if backend.unavailable_reason():
        pytest.skip(backend.unavailable_reason())
    model = build(tiny_config(), seed=0).eval()
    decoder = backend.prepare(model, torch.float32)
    assert isinstance(decoder, CompiledDecoder) and decoder.model is not model  # a copy: the model is unchanged
    assert not decoder.compile_prefill


def test_inductors_caches_live_in_archbenchs_cache_directory_whatever_is_imported(tmp_path) -> None:
    """Importing torchao fixes inductor's cache directory for the process (its default under /tmp); archbench
    points inductor at its own cache directory before the studies import it, and keeps a directory the user
    set. A cold archbench cache is then cold for inductor too."""
    import subprocess
    import sys

    from bench.run import ROOT

    probe = ("import bench, torchao; from torch._inductor.runtime.cache_dir_utils import cache_dir; "
             "print(cache_dir())")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["ARCHBENCH_CACHE_DIR"] = str(tmp_path / "archbench")
    mine = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert mine.returncode == 0, mine.stderr[-2000:]
    assert mine.stdout.strip() == str(tmp_path / "archbench" / "inductor")
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "users-own")
    users = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert users.stdout.strip() == str(tmp_path / "users-own"), users.stderr[-2000:]


def test_transformers_fast_path_on_the_compiled_engine_generates_our_tokens() -> None:
    """The compiled engine's peer is transformers' own fast path (static cache, generate compiling its decode
    step with the engine's options); dynamo's eager backend here stands in for inductor so the test stays
    fast: the static cache, the tracing and the tokens are the same. Uncached, it has no compiled path."""
    transformers = pytest.importorskip("transformers")
    from models import generate, load_hf

    backend = backends.get("torch-compile")
    assert backend.supports(torch.float32, backends.TORCH_PEER) is None
    hf_cfg = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = load_hf(hf)
    model, kwargs = backend.prepare_peer(hf)
    assert kwargs["cache_implementation"] == "static"
    config = kwargs["compile_config"]
    assert config.fullgraph and "freezing" not in config.options
    assert config.options.items() < backend.compile_options()["options"].items()
    config.backend, config.options = "eager", None
    prompt = torch.randint(0, 96, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        tokens = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                min_new_tokens=12, do_sample=False, pad_token_id=0, **kwargs)
        compile_count = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
        assert compile_count >= 1  # transformers compiled its step (it runs eager where it cannot)
        assert torch.equal(tokens, generate(ours, prompt, 12))
    with pytest.raises(backends.CannotPrepareError, match="static cache"):
        backend.prepare_peer(hf, use_cache=False)


BUCKETED_KINDS = [("raw-fp16", {}), ("raw-bf16", {}), ("tq3", {}), ("tq2", {"window": 16}), ("tq4", {"key_group": 32}),
                  ("uniform3", {}), ("uniform2", {"key_group": 16})]


def _cache_parity(model, decoder, kind: str, options: dict, prompt_len: int, steps: int, seed: int = 0,
                  atol: float = 1e-4) -> None:
    """The compiled decoder over a cache of `kind` against the eager model over another of the same kind
    (`_side_by_side`)."""
    cfg = model.config
    prompt = torch.randint(0, cfg.vocab_size, (2, prompt_len), generator=torch.Generator().manual_seed(seed))
    _side_by_side(model, decoder, kv_cache.make(kind, cfg, 2, prompt_len + steps, **options),
                  kv_cache.make(kind, cfg, 2, prompt_len + steps, **options), prompt, steps, atol)


@pytest.mark.parametrize("compile_prefill", [  # the engine's path in every run; the compiled-prompt option thorough
    pytest.param(False, id="eager-prompt"), pytest.param(True, id="compiled-prompt", marks=pytest.mark.thorough)])
@pytest.mark.parametrize(("kind", "options"), BUCKETED_KINDS, ids=[f"{k}{''.join(f'-{o}{v}' for o, v in opts.items())}"
                                                                     for k, opts in BUCKETED_KINDS])
def test_compiled_step_over_cache_kinds_matches_their_eager_caches(kind: str, options: dict,
                                                                   compile_prefill: bool) -> None:
    """Every kind with a bucket view, its options included (exact key groups, a window), compiled (dynamo's
    trace; `eager` backend) gives its eager cache's logits: a prompt that completes key groups (run eager, as
    the engine runs it, whose state the compiled steps then read; or compiled), then steps that complete
    more, fill and overwrite the rings and cross into the second bucket, in one graph per bucket (plus the
    compiled prompt's)."""
    model = build(tiny_config(pos="rope", n_kv_head=2, max_seq_len=160), seed=0).eval()
    decoder = CompiledDecoder(model, backend="eager", compile_prefill=compile_prefill)
    before = len(compile_events)
    _cache_parity(model, decoder, kind, options, prompt_len=40, steps=40)
    assert len(compile_events) - before == 2 + compile_prefill  # steps in buckets 64 and 128 (the prompt's)


@pytest.mark.parametrize("kind", [None, "raw-fp32", "tq3", "uniform3"], ids=lambda k: k or "static")
def test_a_kinds_graphs_serve_its_later_caches_made_in_any_mode(kind: str | None) -> None:
    """The graphs a decode compiled serve every later cache of its kind: one made under no_grad, the next
    under inference_mode (dynamo guards on the kind of tensor it is given; the caches and the inputs are
    made alike in every mode), of another quantizer seed (its rotation and codebook are graph inputs).
    A benchmark's caches made outside inference mode and `generate`'s made inside it used to compile
    GPT-2 124M's graphs twice (about 40 s a run with freezing)."""
    model = build(tiny_config(pos="rope", n_layer=1, max_seq_len=64), seed=0).eval()
    decoder = CompiledDecoder(model, backend="eager")
    prompt = torch.randint(0, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    graphs = []
    for mode, seed in ((torch.no_grad, 0), (torch.inference_mode, 1)):
        before = len(compile_events)
        with mode():
            options = {"seed": seed} if kind == "tq3" else {}
            cache = decoder.make_cache(1, 24) if kind is None else kv_cache.make(kind, model.config, 1, 24, **options)
            token = decoder(prompt, cache)[:, -1:].argmax(-1)  # (1, 1)
            for _ in range(8):
                token = decoder(token, cache)[:, -1:].argmax(-1)
        graphs.append(len(compile_events) - before)
    assert graphs == [1, 0]  # the step's, once (the prompt runs eager)


@pytest.mark.thorough  # about 30 s of inductor compiling: freezing bypasses inductor's graph cache
def test_inductor_over_quantized_caches_with_freezing() -> None:
    """Inductor with freezing, as the engine runs: the uniform cache (an eager prompt completing a key group,
    then a compiled step completing the next) and TurboQuant caches of two seeds through the same decoder,
    each equal to its own eager cache (the quantizer's rotation is an input of the graph, never folded into
    it as a constant)."""
    engine = backends.get("torch-compile")
    if engine.unavailable_reason():
        pytest.skip(engine.unavailable_reason())
    model = build(tiny_config(pos="rope", n_layer=1, n_kv_head=2, max_seq_len=64), seed=0).eval()
    decoder = CompiledDecoder(model, options={"freezing": True})
    _cache_parity(model, decoder, "uniform3", {}, prompt_len=40, steps=24)
    for seed in (0, 1):
        _cache_parity(model, decoder, "tq3", {"seed": seed}, prompt_len=8, steps=2)
