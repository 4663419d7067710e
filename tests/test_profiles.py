"""Hardware detection (with and without NVML), timers, memory probes, ceilings and roofline arithmetic."""

import time

import numpy as np
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


def test_bandwidth_ceiling_is_positive_and_the_fastest_read() -> None:
    bw = measure_bandwidth("cpu", nbytes=16 << 20, repeats=2)
    assert bw.copy_Bps > 1e8 and bw.matvec_out_in_Bps > 1e8 and bw.matvec_in_out_Bps > 1e8
    assert bw.matvec_Bps == max(bw.matvec_out_in_Bps, bw.matvec_in_out_Bps)
    assert bw.decode_Bps == max(bw.read_Bps, bw.matvec_Bps)
    assert set(bw.to_dict()) == {"copy_Bps", "read_Bps", "matvec_out_in_Bps", "matvec_in_out_Bps", "buffer_bytes",
                                 "decode_Bps"}


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


def test_prepared_models_are_kept_per_source_and_engine_within_a_budget() -> None:
    """Cases coming back to a model on an engine share its prepared copy; the same shapes with other weights
    are another model; past the byte budget the least recently used copy is let go."""
    from bench.backends import get
    from bench.harness import PreparedModels

    backend = get("torch-cpu")
    first, second = (build(variants.get("gpt2-tiny"), seed=s).eval() for s in (0, 1))  # same shapes, other weights
    size = sum(p.numel() for p in first.parameters()) * 4
    kept = PreparedModels(budget_bytes=2 * size)
    (a, _), (b, _) = kept.get(backend, first, torch.float32), kept.get(backend, second, torch.float32)
    assert kept.get(backend, first, torch.float32)[0] is a  # kept, though another model came between
    assert b is not a and a is not first  # a copy: the model itself is never changed
    idx = torch.arange(8)[None]  # (1, 8)
    with torch.inference_mode():
        torch.testing.assert_close(b(idx), second(idx), atol=0, rtol=0)  # eager torch: the model as it is
        assert not torch.allclose(b(idx), first(idx))
    third = build(variants.get("gpt2-tiny"), seed=2).eval()
    kept.get(backend, third, torch.float32)  # over the budget: `second`, the least recently used, goes
    assert kept.get(backend, first, torch.float32)[0] is a and kept.get(backend, second, torch.float32)[0] is not b


def test_roofline_gpt2_small_by_hand() -> None:
    cfg = variants.get("gpt2-small")
    # per layer: qkv 768*2304 + out 768*768 + MLP 2*768*3072 = 7,077,888; 12 layers + head 768*50257
    assert roofline.matmul_params(cfg) == 12 * 7_077_888 + 38_597_376 == 123_532_032
    # every parameter is streamed each step except the position table (one row is read)
    assert roofline.streamed_params(cfg) == count_params(build(cfg, device="meta")) - 1024 * 768
    step = roofline.decode_step(cfg, position=99)
    assert step.kv_bytes == 73_728 * 100  # docs/references.md: 73,728 B per token in fp32
    assert step.weight_bytes == 123_653_376 * 4
    assert step.flops == 2 * 123_532_032 + 12 * 12 * 64 * 100 * 4
    bound = roofline.tokens_per_s_bound(step, bandwidth_Bps=step.bytes * 10.0)
    assert bound == pytest.approx(10.0)
    assert roofline.tokens_per_s_bound(step, 1e30, flops_per_s=step.flops * 4.0) == pytest.approx(4.0)
    assert roofline.decode_bytes(cfg, 0, 2) == roofline.decode_step(cfg, 0).bytes + roofline.decode_step(cfg, 1).bytes


def test_roofline_counts_grouped_kv_heads() -> None:
    cfg = variants.get("llama-2-7b")
    assert roofline.decode_step(cfg, 0, param_bytes=2, kv_element_bytes=2).kv_bytes == 524_288  # docs/references.md


def test_ceilings_command_prints_each_measured_read_and_the_decode_ceiling(monkeypatch, capsys) -> None:
    import profiles.__main__ as cli
    from profiles import ceilings

    measured = ceilings.BandwidthCeiling(copy_Bps=20e9, read_Bps=30e9, matvec_out_in_Bps=15e9,
                                         matvec_in_out_Bps=20e9, buffer_bytes=1 << 28)
    monkeypatch.setattr(ceilings, "measure_bandwidth", lambda device: measured)
    monkeypatch.setattr(ceilings, "measure_matmul", lambda device, dtype: 1e11)
    assert cli.main(["ceilings"]) == 0
    out = capsys.readouterr().out
    assert "matvec 15.0 GB/s (out,in) 20.0 GB/s (in,out)" in out and "decode ceiling 30.0 GB/s" in out


def test_serving_figures_are_ttft_and_tpot_percentiles() -> None:
    """TTFT is the prefill plus the first step; TPOT's mean and percentiles are over the later steps."""
    from profiles.timers import serving_figures

    steps = [0.5, *[0.01 * i for i in range(1, 101)]]  # a slow first step, then 10 ms ... 1 s
    got = serving_figures(0.2, steps)
    later = np.asarray(steps[1:])
    assert got["ttft_s"] == pytest.approx(0.7)
    assert got["tpot_mean_s"] == pytest.approx(later.mean())
    assert [got[f"tpot_p{q}_s"] for q in (50, 90, 99)] == pytest.approx(list(np.percentile(later, [50, 90, 99])))
    assert serving_figures(0.2, [0.1])["tpot_p99_s"] == pytest.approx(0.1)  # one step: its own TPOT
    assert serving_figures(0.2, []) == {"ttft_s": 0.2}


def _fake_rapl(root, domains: dict[str, int], max_range: int = 1000) -> None:
    for name, value in domains.items():
        zone = root / name
        zone.mkdir(parents=True, exist_ok=True)
        (zone / "energy_uj").write_text(f"{value}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
        (zone / "name").write_text(f"package-{name.split(':')[1]}\n")


def test_rapl_counter_sums_packages_and_survives_a_wrap(tmp_path, monkeypatch) -> None:
    """Packages summed (sub-zones such as intel-rapl:0:0 not counted twice), microjoules to joules, a counter
    that wrapped at max_energy_range_uj counted on; each absence is a reason, not an estimate."""
    from profiles.energy import EnergyCounter, rapl_counter

    _fake_rapl(tmp_path, {"intel-rapl:0": 100, "intel-rapl:1": 900, "intel-rapl:0:0": 50})
    counter = rapl_counter(tmp_path)
    assert isinstance(counter, EnergyCounter) and "package-0, package-1" in counter.source
    start = counter.read()
    _fake_rapl(tmp_path, {"intel-rapl:0": 400, "intel-rapl:1": 100, "intel-rapl:0:0": 999})  # :1 wrapped at 1000
    assert counter.read() - start == pytest.approx((300 + 200) / 1e6)
    assert "absent" in rapl_counter(tmp_path / "none")
    assert "no RAPL package domains" in rapl_counter(tmp_path / "intel-rapl:0:0")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "read_text", denied)
    assert "readable only by root" in rapl_counter(tmp_path)


def test_nvml_counter_reads_millijoules_as_joules_or_says_why() -> None:
    from profiles.energy import EnergyCounter, nvml_counter

    class FakeNvml:
        def __init__(self, fail: bool = False) -> None:
            self.fail, self.mj = fail, 5000

        def nvmlInit(self) -> None:
            if self.fail:
                raise RuntimeError("NVML Shared Library Not Found")

        def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
            return f"gpu{index}"

        def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
            self.mj += 1500
            return self.mj

    counter = nvml_counter(0, FakeNvml())
    assert isinstance(counter, EnergyCounter) and counter.read() == pytest.approx(8.0)
    assert "NVML Shared Library Not Found" in nvml_counter(0, FakeNvml(fail=True))
