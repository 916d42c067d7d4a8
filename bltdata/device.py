"""Where torch work runs: resolving `--device`, the CPU thread count and the entropy model's
numeric precision (`--precision`), in one place."""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")  # what `--device` takes
PRECISIONS = ("fp32", "bf16", "int8")


class DeviceUnavailable(RuntimeError):
    """The device asked for (`--device cuda`) cannot be used on this machine."""


def resolve_device(name: str) -> str:
    """`auto` → `cuda` when CUDA is usable, else `cpu`; a CUDA device fails loudly without CUDA.

    Asking for CUDA on a machine without it is an error rather than a silent fall-back to
    the CPU (which would run, very slowly, with another numeric precision).
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {name} was asked for but CUDA is not available here")
    return name


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads (None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16).

    torch's own probes (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``)
    answer first; /proc/cpuinfo is the fall-back. ``torch.ops.mkldnn._is_mkldnn_bf16_supported``
    is not used: it is true on any AVX512 CPU, where oneDNN emulates bf16 (slower than fp32).
    """
    if flags is None:
        import torch

        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        try:
            if any(probe() for probe in probes if probe is not None):
                return True
        except RuntimeError:  # a probe that cannot run here: ask the kernel instead
            pass
        flags = cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def emulated_precisions(flags: set[str] | None = None) -> dict[str, str]:
    """The precisions this CPU has no hardware unit for, each with the flags it lacks.

    bf16 needs AVX512-BF16 or AMX-BF16 (:func:`cpu_has_fast_bf16`); int8 dot products need
    VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8). Without them oneDNN and ``torch._int_mm`` fall
    back to generic code: measured on a 2-core AMD EPYC without either, the bundled ``small``
    model scored 19.2 kB/s in fp32, 3.7 kB/s in bf16 and about 1 kB/s in int8.
    ``flags`` None: this machine (torch's probes, then /proc/cpuinfo).
    """
    missing = {}
    if not cpu_has_fast_bf16(flags):
        missing["bf16"] = "avx512_bf16 / amx_bf16"
    flags = cpu_flags() if flags is None else flags
    if not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        missing["int8"] = "avx512_vnni / avx_vnni / amx_int8"
    return missing


def default_precision(device: str) -> str:
    """What the hardware runs fastest without integer quantisation: bf16 where there is a bf16
    unit (CUDA with bf16, a CPU with AVX512-BF16/AMX), fp32 elsewhere.

    int8 is never chosen by default: it changes entropies more (see the README's table).
    """
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_precision(name: str | None, device: str) -> str:
    """`auto`/None → :func:`default_precision`; otherwise one of PRECISIONS (ValueError if not)."""
    if name in (None, "auto"):
        return default_precision(device)
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose from auto, {', '.join(PRECISIONS)}")
    return name


def job_precision(precision: str | None, device: str) -> str:
    """The precision a job records and its workers use: like :func:`resolve_precision`, but
    callable where the job is launched, which may lack the workers' device. ``auto`` device:
    CUDA when usable here; ``cuda`` without CUDA here (a launcher for GPU workers): bf16."""
    import torch

    if precision not in (None, "auto"):
        return resolve_precision(precision, device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "bf16"
    return default_precision(device)
