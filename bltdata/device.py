"""Where torch work runs: resolving `--device` and the CPU thread count, in one place."""
from __future__ import annotations


def resolve_device(name: str) -> str:
    """`auto` → `cuda` when CUDA is usable, else `cpu`; a CUDA device fails loudly without CUDA.

    Asking for CUDA on a machine without it is an error rather than a silent fall-back to
    the CPU (which would run, very slowly, with another numeric precision).
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} was asked for but CUDA is not available here")
    return name


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads (None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
