"""Layer widths, torch-free so that configs can import them cheaply."""
from __future__ import annotations


def swiglu_hidden(dim: int, multiple_of: int = 64) -> int:
    """SwiGLU hidden size: 2/3 of 4*dim, rounded up to a multiple (the Llama convention)."""
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
