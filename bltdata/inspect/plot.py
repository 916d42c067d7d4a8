"""PNG figures of patching (`bltdata plot`), drawn with matplotlib's Agg canvas.

- `plot_entropies`: a window of one document, entropy per byte (nats) with the global
  threshold θ as a horizontal line and a vertical line before every byte that starts a
  patch — the figure the BLT paper uses to explain entropy patching. Byte labels run along
  the x axis (printable ASCII as itself, space as ␣, anything else as its hex value).
- `plot_patch_histogram`: how many patches have each length, over a whole directory.

Figures are built on a private `Figure` + `FigureCanvasAgg` (no pyplot global state, no
display needed) and written atomically (temporary name, then rename).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def byte_label(b: int) -> str:
    if b == 0x20:
        return "␣"
    if 0x21 <= b < 0x7F:
        return chr(b)
    return f"{b:02x}"


def plot_entropies(path, data: bytes, entropies, patch_lengths, *, threshold: float | None,
                   start: int = 0, max_bytes: int = 120, title: str = "") -> Path:
    """Entropy per byte for bytes [start, start + max_bytes) with θ and the patch starts."""
    h = np.asarray(entropies, dtype=np.float32)[:len(data)]
    stop = min(len(data), start + max_bytes)
    if not 0 <= start < max(len(data), 1):
        raise ValueError(f"start {start} is outside the document ({len(data)} bytes)")
    xs = np.arange(start, stop)
    starts = np.concatenate([[0], np.cumsum(np.asarray(patch_lengths, dtype=np.int64))[:-1]])
    fig = _new_figure(max(8.0, 0.12 * len(xs) + 2), 4.0)
    ax = fig.add_subplot()
    ax.plot(xs, h[start:stop], marker="o", markersize=3, linewidth=1, color="tab:blue", label="entropy H[k]")
    for s in starts[(starts >= start) & (starts < stop)]:
        ax.axvline(s - 0.5, color="tab:gray", linewidth=0.8, alpha=0.7)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold θ = {threshold:.4g}")
    ax.set_xticks(xs, [byte_label(b) for b in data[start:stop]], fontsize=7, family="monospace")
    ax.set_xlim(start - 1, max(stop, start + 1))
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"bytes {start}..{stop - 1} (vertical lines: patch starts)")
    ax.set_ylabel("entropy (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_patch_histogram(path, counts: dict[int, int], *, max_length: int | None = None, title: str = "") -> Path:
    """Bar chart of patch counts per length; lengths above `max_length` share the last bar."""
    if not counts:
        raise ValueError("no patches to plot")
    lengths = np.array(sorted(counts), dtype=np.int64)
    values = np.array([counts[k] for k in lengths], dtype=np.int64)
    top = int(max_length or lengths.max())
    shown = np.zeros(top + 1, dtype=np.int64)
    np.add.at(shown, np.minimum(lengths, top), values)
    total = int(values.sum())
    mean = float((lengths * values).sum() / total)
    fig = _new_figure(8.0, 4.0)
    ax = fig.add_subplot()
    ax.bar(np.arange(1, top + 1), shown[1:], width=0.85, color="tab:blue")
    ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1, label=f"mean {mean:.3g} bytes")
    overflow = " (last bar: ≥ {})".format(top) if lengths.max() > top else ""
    ax.set_xlabel(f"patch length (bytes){overflow}")
    ax.set_ylabel("patches")
    ax.set_title(title or f"{total:,} patches", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
