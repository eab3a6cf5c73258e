"""What this machine offers: usable cores, native bf16, a C++ compiler for torch.compile, the CPU's
model and vector units. Facts only: policy.py decides what to do with them."""

from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles) and oneDNN is on."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch: look at the CPU flags directly
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def compiler_available() -> bool:
    """True when torch.compile's CPU backend can build kernels here (it needs a C++ compiler).
    The first call imports inductor (seconds): callers ask only when compiling is in question."""
    if os.environ.get("RESNETLAB_NO_COMPILE") == "1":
        return False
    try:
        from torch._inductor import cpp_builder

        return bool(cpp_builder.get_cpp_compiler())
    except Exception:  # no compiler found, or an inductor layout this code does not know
        return False


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('unknown CPU' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_features() -> dict[str, bool]:
    """The vector units that decide CPU speed: AVX2, AVX-512, VNNI (int8 dot products), AMX."""

    def has(name: str) -> bool:
        fn = getattr(torch.cpu, f"_is_{name}_supported", None)
        try:
            return bool(fn()) if fn is not None else False
        except RuntimeError:
            return False

    return {
        "AVX2": has("avx2"),
        "AVX-512": has("avx512"),
        "VNNI": has("vnni"),
        "AMX": has("amx_tile"),
        "native bf16": native_bf16(),
    }


def features_line() -> str:
    """'AMD EPYC ..., AVX2 yes, AVX-512 yes, VNNI yes, AMX no, native bf16 yes': one line."""
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu_features().items())
    return f"{cpu_model()}, {flags}"
