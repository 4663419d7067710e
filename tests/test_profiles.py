"""Hardware detection (with and without NVML), timers, memory probes, ceilings and roofline arithmetic."""

import time

import pytest
import torch

from models import build, count_params, variants
from profiles import detect, roofline, specs
from profiles.ceilings import measure_bandwidth
from profiles.hardware import nvml_gpus
from profiles.memory import MemoryProbe
from profiles.timers import DeviceTimer, time_fn


class FailingNvml:
    """A pynvml stand-in whose library is missing, as on a machine without the NVIDIA driver."""

    def nvmlInit(self):
        raise RuntimeError("NVML Shared Library Not Found")


class OneGpuNvml:
    """A pynvml stand-in with one device that fails one optional query (as old drivers do)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def __init__(self, fail_listing: bool = False):
        self.fail_listing = fail_listing
        self.shutdown = False

    def nvmlInit(self): ...
    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self):
        return b"560.35.03"

    def nvmlDeviceGetCount(self):
        if self.fail_listing:
            raise RuntimeError("GPU is lost")
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Mem", (), {"total": 143771336704, "used": 0})()

    def nvmlDeviceGetMaxClockInfo(self, handle, which):
        return {1: 1980, 2: 3201}[which]

    def nvmlDeviceGetUUID(self, handle):
        raise RuntimeError("not supported")


def test_detect_without_nvml_does_not_crash() -> None:
    profile = detect(nvml=FailingNvml())
    assert profile.gpus == () and "NVML did not initialise" in profile.nvml_error
    assert profile.cpu_count_logical >= 1 and profile.torch == torch.__version__
    assert profile.torch_threads == torch.get_num_threads()
    assert profile.label == profile.cpu_model
    assert isinstance(profile.to_dict()["gpus"], list)


def test_detect_reads_gpus_through_nvml() -> None:
    fake = OneGpuNvml()
    gpus, error = nvml_gpus(fake)
    assert error is None and fake.shutdown
    (gpu,) = gpus
    assert gpu.name == "NVIDIA H200" and gpu.driver == "560.35.03" and gpu.memory_total_bytes == 143771336704
    assert gpu.sm_clock_max_mhz == 1980 and gpu.memory_clock_max_mhz == 3201 and gpu.uuid is None
    gpus, error = nvml_gpus(OneGpuNvml(fail_listing=True))
    assert gpus == () and "GPU is lost" in error


def test_spec_sheets_are_exact_name_lookups() -> None:
    assert specs.lookup("NVIDIA H200").bandwidth_GBps == 4800
    assert specs.lookup("H200") is None  # no fuzzy matching


def test_device_timer_and_time_fn() -> None:
    with DeviceTimer("cpu") as timer:
        time.sleep(0.05)
    assert 0.045 < timer.seconds < 0.5
    calls = []
    times = time_fn(lambda: calls.append(1), "cpu", warmup=2, repeats=3)
    assert len(times) == 3 and len(calls) == 5 and all(t >= 0 for t in times)


def test_memory_probe_sees_a_cpu_allocation() -> None:
    with MemoryProbe("cpu") as probe:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert block.sum() > 0
    assert probe.reading.rss_delta_bytes is not None and probe.reading.rss_delta_bytes > 48 * 2**20
    assert "peak_rss_bytes" in probe.reading.as_metrics()


def test_bandwidth_ceiling_is_positive_and_picks_a_layout() -> None:
    bw = measure_bandwidth("cpu", nbytes=16 << 20, repeats=2)
    assert bw.copy_Bps > 1e8 and bw.matvec_out_in_Bps > 1e8 and bw.matvec_in_out_Bps > 1e8
    assert bw.best_layout in ("out_in", "in_out") and bw.decode_Bps == max(bw.read_Bps, bw.matvec_Bps)
    assert bw.best_layout == ("in_out" if bw.matvec_in_out_Bps > 1.05 * bw.matvec_out_in_Bps else "out_in")


def test_read_probe_measures_the_read_bandwidth_now() -> None:
    from profiles.ceilings import ReadProbe

    probe = ReadProbe("cpu", nbytes=16 << 20, repeats=2)
    assert probe.nbytes == 16 << 20 and probe.matrix.shape == (4096, 1024)
    readings = [probe() for _ in range(3)]
    assert all(1e8 < r < 1e13 for r in readings)  # bytes/s: more than 0.1 GB/s, less than 10 TB/s


def test_probe_waits_for_a_spinning_thread_to_stop() -> None:
    import threading
    import time

    from profiles.ceilings import wait_until_idle

    assert wait_until_idle(timeout_s=2.0) < 0.25  # nothing else running: back after a window or two
    started = threading.Event()

    def spin(seconds: float) -> None:  # a thread pool's worker waiting for work, busy
        end = time.perf_counter() + seconds
        started.set()
        while time.perf_counter() < end:
            pass

    worker = threading.Thread(target=spin, args=(0.3,))
    worker.start()
    started.wait()
    waited = wait_until_idle(timeout_s=2.0)
    worker.join()
    assert 0.2 < waited < 1.0


@pytest.mark.parametrize("layout", ["in_out", "onednn", "gemv"])
def test_weight_layouts_give_the_same_logits_and_tokens(layout: str) -> None:
    from bench.backends import get
    from models import generate, kernels
    from models.layout import onednn_available

    if layout == "onednn" and not onednn_available():
        pytest.skip(f"torch {torch.__version__} has no usable oneDNN linear here")
    if layout == "gemv" and kernels.unavailable_reason():
        pytest.skip(kernels.unavailable_reason())
    model = build(variants.get("gpt2-tiny"), seed=0).eval()
    prepared = get("torch-cpu").prepare(model, layout=layout)
    idx = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(prepared(idx), model(idx), atol=1e-4, rtol=1e-4)
        prompt = idx[:1, :8]
        assert torch.equal(generate(prepared, prompt, 24), generate(prepared, prompt, 24, use_cache=False))
    with pytest.raises(ValueError, match="allowed values: out_in, in_out, onednn, gemv"):
        get("torch-cpu").prepare(model, layout="blocked")


def test_fastest_layout_times_every_usable_layout_and_picks_the_quickest() -> None:
    from bench.backends import get
    from models import kernels
    from models.layout import onednn_available

    backend = get("torch-cpu")
    model = build(variants.get("gpt2-tiny"), seed=0).eval()
    usable = backend.layouts(torch.float32)
    assert usable[:2] == ("out_in", "in_out") and ("onednn" in usable) == onednn_available()
    assert ("gemv" in usable) == (kernels.unavailable_reason() is None)
    assert backend.layouts(torch.bfloat16) == ("out_in", "in_out")  # oneDNN's and our kernel's layouts: fp32 only
    small, untuned = backend.fastest_layout(model, prefer="in_out")  # 1M parameters: below the tuning size
    assert small.layout == "in_out" and small.step_s == {}
    assert any(type(m).__name__ == "InputMajorLinear" for m in untuned.modules())
    choice, prepared = backend.fastest_layout(model, batch=2, window_s=0.005, repeats=2, min_weight_bytes=0)
    assert set(choice.step_s) == set(usable) and all(s > 0 for s in choice.step_s.values())
    kinds = {"out_in": "Linear", "in_out": "InputMajorLinear", "onednn": "OneDnnLinear", "gemv": "RowGemvLinear"}
    assert type(prepared.blocks[0].attn.qkv).__name__ == kinds[choice.layout]  # the winner, prepared

    def expected(step_s: dict[str, float], prefer: str) -> str:  # the preferred within 3%, else the fastest
        fastest = min(step_s, key=step_s.get)
        return prefer if step_s[prefer] <= 1.03 * step_s[fastest] else fastest

    assert choice.layout == expected(choice.step_s, "out_in")  # default preference: the untransformed layout
    preferred, _ = backend.fastest_layout(model, prefer="in_out", window_s=0.005, repeats=2, min_weight_bytes=0)
    assert preferred.layout == expected(preferred.step_s, "in_out")
    # the tuning works on copies: the model keeps its own nn.Linear layers
    assert sum(type(m) is torch.nn.Linear for m in model.modules()) == 4 * model.config.n_layer + 1


def test_layout_is_tuned_once_per_architecture_and_each_model_keeps_its_weights(monkeypatch) -> None:
    from bench import test_decode
    from bench.backends import LayoutChoice, TorchBackend, get

    monkeypatch.setattr(test_decode, "_LAYOUT_CHOICES", {})
    monkeypatch.setattr(test_decode, "_LAST_PREPARED", {})
    tunings = []

    def counted(self, model, **kwargs):  # a tuning that always picks (in, out), counted
        tunings.append(model)
        return LayoutChoice("in_out", {"in_out": 1.0}), self.prepare(model, layout="in_out")

    monkeypatch.setattr(TorchBackend, "fastest_layout", counted)
    backend = get("torch-cpu")
    first, second = (build(variants.get("gpt2-tiny"), seed=s).eval() for s in (0, 1))  # same shapes, other weights
    a, choice_a = test_decode.prepare_or_skip(backend, first, torch.float32)
    again, _ = test_decode.prepare_or_skip(backend, first, torch.float32)
    b, choice_b = test_decode.prepare_or_skip(backend, second, torch.float32)
    assert len(tunings) == 1 and choice_a == choice_b and choice_b.layout == "in_out"  # tuned once, reused
    assert again is a  # consecutive cases share the prepared model
    assert b is not a and type(b.blocks[0].attn.qkv).__name__ == "InputMajorLinear"
    idx = torch.arange(8)[None]  # (1, 8)
    with torch.inference_mode():
        torch.testing.assert_close(b(idx), second(idx), atol=1e-5, rtol=1e-5)  # the second model's weights
        assert not torch.allclose(b(idx), first(idx))


def test_roofline_gpt2_small_by_hand() -> None:
    cfg = variants.get("gpt2-small")
    # per layer: qkv 768*2304 + out 768*768 + MLP 2*768*3072 = 7,077,888; 12 layers + head 768*50257
    assert roofline.matmul_params(cfg) == 12 * 7_077_888 + 38_597_376 == 123_532_032
    # every parameter is streamed each step except the position table (one row is read)
    assert roofline.streamed_params(cfg) == count_params(build(cfg, device="meta")) - 1024 * 768
    step = roofline.decode_step(cfg, position=99)
    assert step.kv_bytes == 73_728 * 100  # REFERENCES.md: 73,728 B per token in fp32
    assert step.weight_bytes == 123_653_376 * 4
    assert step.flops == 2 * 123_532_032 + 12 * 12 * 64 * 100 * 4
    bound = roofline.tokens_per_s_bound(step, bandwidth_Bps=step.bytes * 10.0)
    assert bound == pytest.approx(10.0)
    assert roofline.tokens_per_s_bound(step, 1e30, flops_per_s=step.flops * 4.0) == pytest.approx(4.0)
    assert roofline.decode_bytes(cfg, 0, 2) == roofline.decode_step(cfg, 0).bytes + roofline.decode_step(cfg, 1).bytes


def test_roofline_counts_grouped_kv_heads() -> None:
    cfg = variants.get("llama-2-7b")
    assert roofline.decode_step(cfg, 0, param_bytes=2, kv_element_bytes=2).kv_bytes == 524_288  # REFERENCES.md


def test_ceilings_command_prints_each_measured_layout_and_the_decode_ceiling(monkeypatch, capsys) -> None:
    import profiles.__main__ as cli
    from profiles import ceilings

    measured = ceilings.BandwidthCeiling(copy_Bps=20e9, read_Bps=30e9, matvec_out_in_Bps=15e9,
                                         matvec_in_out_Bps=20e9, buffer_bytes=1 << 28, matvec_onednn_Bps=25e9)
    monkeypatch.setattr(ceilings, "measure_bandwidth", lambda device: measured)
    monkeypatch.setattr(ceilings, "measure_matmul", lambda device, dtype: 1e11)
    assert cli.main(["ceilings"]) == 0
    out = capsys.readouterr().out
    assert "25.0 GB/s (onednn)" in out and "(gemv)" not in out  # not measured: left out, not shown as 0
    assert "faster plain layout in_out; decode ceiling 30.0 GB/s" in out
