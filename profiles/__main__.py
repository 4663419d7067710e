"""`python -m profiles` prints this machine's hardware profile; `python -m profiles ceilings` measures
bandwidth and matmul ceilings; `python -m profiles trace --variant NAME` writes a torch.profiler trace."""

from __future__ import annotations

import argparse
import json
import sys

import torch


def _print_profile(as_json: bool) -> None:
    from . import specs
    from .hardware import SOFTWARE, detect

    profile = detect()
    if as_json:
        print(json.dumps(profile.to_dict(), indent=2))
        return
    rows = [("CPU", profile.cpu_model), ("logical CPUs", profile.cpu_count_logical),
            ("torch threads", profile.torch_threads),
            ("memory", f"{profile.memory_total_bytes / 2**30:.1f} GiB" if profile.memory_total_bytes else "unknown"),
            ("OS", profile.os),
            *[(label, getattr(profile, key) or "none") for label, key in SOFTWARE],
            ("onnxruntime providers", ", ".join(profile.onnxruntime_providers) or "–")]
    for gpu in profile.gpus:
        spec = specs.lookup(gpu.name)
        label = (f"{gpu.name}, {gpu.memory_total_bytes / 2**30:.0f} GiB, driver {gpu.driver}, "
                 f"cc {gpu.compute_capability}")
        if spec:
            bf16 = spec.tflops.get("bf16", float("nan"))
            label += f" (spec: {spec.bandwidth_GBps:.0f} GB/s, {bf16:.0f} TFLOP/s bf16)"
        rows.append((f"GPU {gpu.index}", label))
    if not profile.gpus:
        rows.append(("GPUs", f"none ({profile.nvml_error})" if profile.nvml_error else "none"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiles", description="the hardware profile of this machine")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    sub = parser.add_subparsers(dest="command")
    ceil = sub.add_parser("ceilings", help="measure memory bandwidth and matmul throughput")
    ceil.add_argument("--device", default="cpu")
    trace = sub.add_parser("trace", help="write a torch.profiler trace (Chrome format) of a decode")
    trace.add_argument("--variant", required=True)
    trace.add_argument("--device", default="cpu")
    trace.add_argument("--tokens", type=int, default=64, help="tokens decoded (default 64)")
    trace.add_argument("--prompt", type=int, default=16, help="prompt tokens (default 16)")
    trace.add_argument("--no-cache", action="store_true", help="trace the uncached (recompute) decode")
    trace.add_argument("--out", default="trace.json", help="Chrome trace file (default trace.json)")
    args = parser.parse_args(argv)
    if args.command is None:
        _print_profile(args.json)
        return 0
    if args.command == "ceilings":
        from .ceilings import measure_bandwidth, measure_matmul

        bw = measure_bandwidth(args.device)
        print(f"read {bw.read_Bps / 1e9:.1f} GB/s; copy {bw.copy_Bps / 1e9:.1f} GB/s; matvec "
              f"{bw.matvec_out_in_Bps / 1e9:.1f} GB/s (out,in) {bw.matvec_in_out_Bps / 1e9:.1f} GB/s (in,out); "
              f"decode ceiling {bw.decode_Bps / 1e9:.1f} GB/s")
        for dtype in (torch.float32, torch.bfloat16):
            print(f"matmul {dtype}: {measure_matmul(args.device, dtype) / 1e12:.3f} TFLOP/s")
        return 0
    from models import build, variants

    from .trace import trace_decode

    try:
        cfg = variants.get(args.variant)
    except ValueError as exc:
        parser.error(str(exc))
    model = build(cfg, seed=0, device=args.device).eval()
    per_class = trace_decode(model, prompt_len=args.prompt, decode_tokens=args.tokens,
                             use_cache=not args.no_cache, out=args.out)
    total = sum(per_class.values()) or 1.0
    print(f"wrote {args.out} (open in chrome://tracing or Perfetto)")
    for cls, seconds in sorted(per_class.items(), key=lambda kv: -kv[1]):
        print(f"{cls:10s} {seconds * 1e3:9.2f} ms  {100 * seconds / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
