"""The decode study: how decode time grows with length, with a KV cache (O(T)) and without (O(T^2)).

Each benchmark times `decode_tokens` greedy steps after an untimed prefill of the prompt, with
fresh state every round. Before timing, the first steps are checked against the other cache mode.
Prefill is timed apart (`test_prefill`). `test_peer` runs transformers' generate on the same
weights beside ours.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch

from bench import backends, harness
from bench.studies.decode import STUDY
from bench.studies.decode.records import (
    DecodeMetrics,
    DecodeParams,
    PeerMetrics,
    PeerParams,
    PrefillMetrics,
    PrefillParams,
)
from models import GPT, PositionLimitError, generate, variants
from models.compiled import compile_events
from models.generate import decode
from profiles import roofline
from profiles.energy import EnergyCounter
from profiles.memory import MemoryProbe
from profiles.timers import DeviceTimer, serving_figures, synchronize

DTYPES = {name: dtype for dtype, name in backends.DTYPE_NAMES.items()}
CHECK_STEPS = 16  # steps compared between cache modes before timing (also the warm-up)
CAL_PROMPT, CAL_STEPS = 4, 16  # the calibration workload timed before every round (see test_decode)


@dataclass(frozen=True)
class DecodeCase:
    variant: str
    backend: str
    cache: str  # "none" | "raw"
    decode_tokens: int
    batch: int
    dtype: str
    prompt_len: int
    rounds: int
    paired: bool = False  # uncached at the sweep's longest uncached length: a cached run is timed beside each round
    prefill: bool = True  # cached: a prefill over a prompt of `decode_tokens` tokens is timed too

    @property
    def id(self) -> str:
        return (f"{self.variant}-{self.backend}-{self.cache}-T{self.decode_tokens}-B{self.batch}-{self.dtype}")


@dataclass(frozen=True)
class PeerCase:
    variant: str
    backend: str
    impl: str  # "archbench" | "transformers"
    cache: str
    decode_tokens: int
    prompt_len: int
    rounds: int

    @property
    def id(self) -> str:
        return f"{self.impl}-{self.variant}-{self.backend}-{self.cache}-T{self.decode_tokens}"


def _decode_cases(config: pytest.Config) -> list[DecodeCase]:
    out = []
    sweeps = harness.sweep(config, STUDY)
    for sweep in sweeps.decode if sweeps else ():
        usable = [b for b in harness.selected_backends(config, backends.DECODE, DTYPES[sweep.dtype])
                  if (sweep.families is None or b.family in sweep.families)
                  and (sweep.per_shape_compilers or not b.compiles_per_shape)]
        if sweep.first_of_family:  # the plain engine of each family (registry order: it comes before its
            firsts: dict[tuple[str, str], backends.Backend] = {}  # variants), where this run selected it
            for b in backends.BACKENDS.values():
                firsts.setdefault((b.family, b.device_type), b)
            usable = [b for b in usable if firsts.get((b.family, b.device_type)) is b]
        for variant in sweep.variants:
            for backend_obj in usable:
                backend = backend_obj.name
                prefill = backend_obj.own_prefill  # else its prefill is eager torch's, measured there
                uncached = [t for t in sweep.lengths if not sweep.uncached_max_len or t <= sweep.uncached_max_len]
                for batch in sweep.batches:
                    for cache_kind in sweep.caches:
                        for length in sweep.lengths:
                            if cache_kind == "none" and length not in uncached:
                                continue
                            rounds = sweep.rounds if cache_kind == "raw" else sweep.uncached_rounds
                            paired = cache_kind == "none" and length == max(uncached)
                            out.append(DecodeCase(variant, backend, cache_kind, length, batch, sweep.dtype,
                                                  sweep.prompt_len, rounds, paired, prefill and cache_kind == "raw"))
    return out


def _prefill_cases(config: pytest.Config) -> list[DecodeCase]:
    return [c for c in _decode_cases(config) if c.prefill]


def _peer_cases(config: pytest.Config) -> list[PeerCase]:
    """Ours and transformers' on every backend that runs both (the peer is a torch model)."""
    sweeps = harness.sweep(config, STUDY)
    return [PeerCase(sweep.variant, backend.name, impl, cache_kind, length, sweep.prompt_len, sweep.rounds)
            for sweep in (sweeps.peer if sweeps else ())
            for backend in harness.selected_backends(config, backends.TORCH_PEER)
            for cache_kind in sweep.caches for length in sweep.lengths for impl in ("archbench", "transformers")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    makers = {"decode_case": _decode_cases, "prefill_case": _prefill_cases, "peer_case": _peer_cases}
    for arg, make in makers.items():
        if arg in metafunc.fixturenames:
            cases = make(metafunc.config)
            metafunc.parametrize(arg, cases, ids=[c.id for c in cases])


def _cpu_model(variant: str) -> GPT:
    """Random-initialised weights (seed 0): decode speed does not depend on what the weights learned."""
    return harness.random_model(variant)


def _prompt(vocab: int, batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1234))


def _sha1(tokens: torch.Tensor) -> str:
    return hashlib.sha1(tokens.cpu().numpy().tobytes()).hexdigest()[:16]


def _positions_to_trace(prompt_len: int, n_steps: int, count: int) -> list[int]:
    """Step indices (0-based) spread over the run, first and last included."""
    if n_steps <= count:
        return list(range(n_steps))
    return sorted({round(i * (n_steps - 1) / (count - 1)) for i in range(count)})


def prepare(backend: backends.Backend, cpu_model: GPT, dtype: torch.dtype) -> tuple[object, float]:
    """`cpu_model` on `backend` in `dtype` and the seconds preparing it took (an exported engine exports
    there unless its export is cached on disk; a compiled engine compiles later, on first use), shared
    with the cases and studies that follow (`harness.prepared`); or a skip carrying the engine's message."""
    return harness.prepared(backend, cpu_model, dtype)


def test_decode(benchmark, record, ceiling, read_probe, energy, pytestconfig, decode_case: DecodeCase) -> None:
    case = decode_case
    backend = harness.available_or_skip(backends.get(case.backend))
    cfg = variants.get(case.variant)
    total = case.prompt_len + case.decode_tokens
    cpu_model = _cpu_model(case.variant)
    try:
        cpu_model.check_positions(total)
    except PositionLimitError as exc:
        pytest.skip(str(exc))
    bandwidth = ceiling(torch.device(backend.device_type))
    dtype = DTYPES[case.dtype]
    model, prepare_s = prepare(backend, cpu_model, dtype)
    device = backend.input_device
    prompt = _prompt(cfg.vocab_size, case.batch, case.prompt_len).to(device)
    tokens = torch.zeros(case.batch, total, dtype=torch.long, device=device)  # (B, P + T)
    tokens[:, : case.prompt_len] = prompt
    cache = model.make_cache(case.batch, total) if case.cache == "raw" else None
    # Shared machines have slow phases lasting seconds. Before every timed round a fixed small workload
    # (16 cached steps of the same model) is timed too; round time / calibration time is steady across
    # such phases, and the regression gates use it (`reports.analysis`, `time_norm`).
    cal_cache = model.make_cache(case.batch, CAL_PROMPT + CAL_STEPS)
    cal_tokens = torch.zeros(case.batch, CAL_PROMPT + CAL_STEPS, dtype=torch.long, device=device)
    calibration: list[float] = []
    # The cache's speed-up is the gated figure most exposed to a shared machine's phases when its two
    # sides are timed minutes apart (the tiny models' speed-up at T=512 moved between 4x and 7.5x from
    # run to run). At the longest uncached length, each uncached round is paired with a cached run of the
    # same length timed just before it; the median of the per-round ratios is the speed-up.
    pair_cache = model.make_cache(case.batch, total) if case.paired else None
    pair_tokens = tokens.clone() if case.paired else None  # (B, P + T)
    paired_cached: list[float] = []
    # The ceiling of each cached round's moment: the machine's read bandwidth probed right before the
    # round and right after it (`ReadProbe`); `reports.analysis` sets each round's bandwidth against the
    # mean of the two, beside the session's ceiling measured once at its start.
    bandwidth_probe = read_probe(torch.device(backend.device_type)) if cache is not None else None
    ceiling_before: list[float] = []
    ceiling_after: list[float] = []
    # Energy, where the device keeps a counter (NVML, RAPL): read as each timed round starts and ends.
    counter = energy(torch.device(backend.device_type))
    counter = counter if isinstance(counter, EnergyCounter) else None
    energy_j: list[float] = []
    round_started_j: list[float] = []

    def probe_after_round() -> None:
        if round_started_j:
            energy_j.append(counter.read() - round_started_j.pop())
        if bandwidth_probe is not None and len(ceiling_after) < len(ceiling_before):
            ceiling_after.append(bandwidth_probe())

    def calibrate() -> None:
        cal_cache.reset()
        logits = model(cal_tokens[:, :CAL_PROMPT], cal_cache)[:, -1]
        with DeviceTimer(device) as timer:
            decode(model, cal_tokens, CAL_PROMPT, logits, CAL_STEPS, cal_cache)
        calibration.append(timer.seconds)

    def time_paired_cached() -> None:
        pair_cache.reset()
        logits = model(prompt, pair_cache)[:, -1]  # (B, vocab)
        with DeviceTimer(device) as timer:
            decode(model, pair_tokens, case.prompt_len, logits, case.decode_tokens, pair_cache)
        paired_cached.append(timer.seconds)

    def prefill(timed_round: bool = True) -> tuple[tuple, dict]:
        if timed_round:
            probe_after_round()  # the previous round has just ended
            calibrate()
            if pair_cache is not None:
                time_paired_cached()
            if bandwidth_probe is not None:
                ceiling_before.append(bandwidth_probe())
        if cache is not None:
            cache.reset()
        logits = model(prompt, cache)[:, -1]
        synchronize(device)  # the prefill is not part of the timed round
        if timed_round and counter is not None:
            round_started_j.append(counter.read())
        return (logits,), {}

    def run(logits: torch.Tensor) -> torch.Tensor:
        logits = decode(model, tokens, case.prompt_len, logits, case.decode_tokens, cache)
        synchronize(device)  # CUDA runs asynchronously: the round ends when the device is done
        return logits

    with torch.inference_mode():
        # Correct before timed, and warm: the first steps agree with the other cache mode. A compiled
        # engine compiles here (every bucket the timed run reaches: the warm-up decodes all T steps).
        graphs_before, started = len(compile_events), time.perf_counter()
        check = min(CHECK_STEPS, case.decode_tokens)
        # The other cache mode; an engine that compiles per shape is checked against eager torch's uncached
        # forward instead (its own would compile a dynamic-shape graph only for this check)
        if cache is not None and backend.compiles_per_shape:
            other, _ = prepare(backends.reference(backend.device_type), cpu_model, dtype)
            expected = generate(other, prompt, check, use_cache=False)
        else:
            expected = generate(model, prompt, check, use_cache=cache is None)
        (logits,), _ = prefill(timed_round=False)
        # an engine that compiles per shape decodes all T steps (every bucket compiled); the others `check` steps
        warm_steps = case.decode_tokens if cache is not None and backend.compiles_per_shape else check
        decode(model, tokens, case.prompt_len, logits, warm_steps, cache)
        calibrate()  # its shapes compiled too; this first figure is not a round's
        calibration.clear()
        if pair_cache is not None:
            time_paired_cached()
            paired_cached.clear()
        synchronize(device)
        warmup_s, graphs = time.perf_counter() - started, len(compile_events) - graphs_before
        if dtype == torch.float32:
            assert torch.equal(tokens[:, : case.prompt_len + check], expected), "cache modes disagree"
        benchmark.pedantic(run, setup=prefill, rounds=case.rounds, warmup_rounds=0)
        probe_after_round()
        # One more run, instrumented: per-step latency at a few positions, and memory. Without a cache
        # a step at position p is one forward over p + 1 tokens, so it is timed on its own.
        trace = set(_positions_to_trace(case.prompt_len, case.decode_tokens,
                                        harness.sweep(pytestconfig, STUDY).trace_positions))
        step_latency, step_times, serving = {}, [], {}
        with MemoryProbe(device) as probe:
            if cache is None:
                for step in sorted(trace):
                    with DeviceTimer(device) as timer:
                        model(tokens[:, : case.prompt_len + step + 1])
                    step_latency[str(case.prompt_len + step)] = timer.seconds
            else:  # every step timed: the serving figures (TTFT, TPOT percentiles) come from this run
                with DeviceTimer(device) as prefill_timer:
                    (logits,), _ = prefill(timed_round=False)
                for step in range(case.decode_tokens):
                    with DeviceTimer(device) as timer:
                        logits = decode(model, tokens, case.prompt_len + step, logits, 1, cache)
                    step_times.append(timer.seconds)
                    if step in trace:
                        step_latency[str(case.prompt_len + step)] = timer.seconds
                serving = serving_figures(prefill_timer.seconds, step_times)

    param_bytes = torch.finfo(dtype).bits // 8
    if cache is not None:
        bytes_read = roofline.decode_bytes(cfg, case.prompt_len, case.decode_tokens, batch=case.batch,
                                           param_bytes=param_bytes, kv_element_bytes=param_bytes)
    else:  # every step streams the weights once (activations ignored)
        bytes_read = case.decode_tokens * roofline.streamed_params(cfg) * param_bytes
    record("decode", case.variant, backend,
           params=DecodeParams(cache=case.cache, decode_tokens=case.decode_tokens, prompt_tokens=case.prompt_len,
                               batch=case.batch, dtype=case.dtype, pos=cfg.pos, norm=cfg.norm),
           metrics=asdict(DecodeMetrics(
               kv_bytes=cache.nbytes if cache is not None else 0,
               weight_bytes=roofline.streamed_params(cfg) * param_bytes, bytes_read=bytes_read,
               ceiling_Bps=bandwidth.decode_Bps, step_latency_s=step_latency,
               tokens_sha1=_sha1(tokens), calibration_s=calibration, paired_cached_s=paired_cached,
               ceiling_before_Bps=ceiling_before, ceiling_after_Bps=ceiling_after, warmup_s=warmup_s,
               graphs_compiled=graphs, prepare_s=prepare_s, energy_j=energy_j, **serving,
               fused_ops=model.fused_ops() if hasattr(model, "fused_ops") else {})) | probe.reading.as_metrics())


def test_prefill(benchmark, record, ceiling, prefill_case: DecodeCase) -> None:
    """One forward over a prompt of `decode_tokens` tokens, filling a fresh cache."""
    case = prefill_case
    backend = harness.available_or_skip(backends.get(case.backend))
    cfg = variants.get(case.variant)
    cpu_model = _cpu_model(case.variant)
    try:
        cpu_model.check_positions(case.decode_tokens)
    except PositionLimitError as exc:
        pytest.skip(str(exc))
    dtype = DTYPES[case.dtype]
    ceiling(torch.device(backend.device_type))  # on first use: the device warmed up and its ceiling recorded
    model, _ = prepare(backend, cpu_model, dtype)
    prompt = _prompt(cfg.vocab_size, case.batch, case.decode_tokens).to(backend.input_device)
    cache = model.make_cache(case.batch, case.decode_tokens)

    def setup() -> tuple[tuple, dict]:
        cache.reset()
        return (), {}

    with torch.inference_mode():
        torch.testing.assert_close(model(prompt, cache), model(prompt), atol=1e-4, rtol=1e-4)  # correct first
        cache.reset()
        benchmark.pedantic(harness.synced(lambda: model(prompt, cache), backend.input_device), setup=setup,
                           rounds=max(3, case.rounds), warmup_rounds=1)
    record("decode", case.variant, backend,
           params=PrefillParams(prompt_tokens=case.decode_tokens, batch=case.batch, dtype=case.dtype, pos=cfg.pos,
                                norm=cfg.norm),
           metrics=PrefillMetrics(kv_bytes=cache.nbytes))


@pytest.fixture(scope="module")
def peer_models(pytestconfig: pytest.Config):
    """transformers' model and ours on the same weights, per variant: the --weights checkpoint in its own class
    and ours loaded from it, or the decode benchmarks' random-seeded model and a GPT2LMHeadModel holding it."""
    transformers = pytest.importorskip("transformers", reason="transformers is needed for the peer comparison")
    from bench.plugin import run_config
    from models import load_hf
    from models.hf import to_gpt2_lm_head

    made = {}

    def get(variant: str):
        """(transformers' model, ours, the label its records carry)."""
        if variant not in made:
            weights = run_config(pytestconfig).weights
            label = variant
            if weights:  # the class the checkpoint's config names; every weight loaded, or no comparison
                hf, info = transformers.AutoModelForCausalLM.from_pretrained(weights, local_files_only=True,
                                                                              output_loading_info=True)
                wrong = {k: sorted(v)[:5] for k, v in info.items() if v and k != "error_msgs"}
                if wrong or info.get("error_msgs"):
                    pytest.fail(f"--weights {weights}: transformers did not load the checkpoint whole "
                                f"({type(hf).__name__}): {wrong or info['error_msgs']}", pytrace=False)
                label = f"checkpoint:{Path(weights).name}"
                made[variant] = (hf.eval(), load_hf(hf), label)
            else:  # the decode benchmarks' own model (its engines' prepared models and compiled graphs are
                # reused) and transformers' GPT2LMHeadModel holding its weights
                ours = _cpu_model(variant)
                made[variant] = (to_gpt2_lm_head(ours), ours, label)
        return made[variant]

    return get


@pytest.fixture(scope="module")
def peer_agreement() -> dict[tuple, torch.Tensor]:
    """The tokens both sides generated, per (model, backend, cache, length), once checked identical: the
    second of a pair of peer cases finds its check done and its side warmed by the first."""
    return {}


def test_peer(benchmark, record, ceiling, peer_models, peer_agreement, peer_case: PeerCase) -> None:
    """Greedy generate of the same tokens by ours and by transformers, prefill included in both."""
    case = peer_case
    backend = harness.available_or_skip(backends.get(case.backend))
    hf_cpu, ours_cpu, label = peer_models(case.variant)
    device = backend.input_device
    ceiling(torch.device(backend.device_type))  # on first use: the device warmed up and its ceiling recorded
    ours, _ = prepare(backend, ours_cpu, torch.float32)
    try:
        hf, hf_kwargs = backend.prepare_peer(hf_cpu, use_cache=case.cache == "raw")
    except backends.CannotPrepareError as exc:
        pytest.skip(f"{backend.name}: {exc}")
    prompt = _prompt(ours.config.vocab_size, 1, case.prompt_len).to(device)
    use_cache = case.cache == "raw"

    def run_ours() -> torch.Tensor:
        return generate(ours, prompt, case.decode_tokens, use_cache=use_cache)

    def run_hf() -> torch.Tensor:
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=case.decode_tokens,
                           min_new_tokens=case.decode_tokens, do_sample=False, use_cache=use_cache,
                           pad_token_id=0, **hf_kwargs)

    checked = (label, backend.name, case.cache, case.decode_tokens, case.prompt_len)
    with torch.inference_mode():
        if checked not in peer_agreement:  # the first calls double as warm-up of both sides
            ours_tokens, hf_tokens = run_ours(), run_hf()
            assert torch.equal(ours_tokens, hf_tokens), \
                "archbench and transformers generated different tokens from the same weights"
            peer_agreement[checked] = ours_tokens
        ours_tokens, identical = peer_agreement[checked], True
        benchmark.pedantic(harness.synced(run_ours if case.impl == "archbench" else run_hf, device),
                           rounds=case.rounds, warmup_rounds=0)
    record("decode", label, backend,
           params=PeerParams(impl=case.impl, cache=case.cache, decode_tokens=case.decode_tokens,
                             prompt_tokens=case.prompt_len),
           metrics=PeerMetrics(tokens_identical=identical, tokens_sha1=_sha1(ours_tokens)))
