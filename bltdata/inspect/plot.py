"""PNG figures of patching (`bltdata plot`), drawn with matplotlib's Agg canvas.

- `plot_entropies`: a window of one document, entropy per byte (nats) with the global
  threshold θ as a horizontal line and a vertical line before every byte that starts a
  patch — the figure the BLT paper uses to explain entropy patching. Byte labels run along
  the x axis (`byte_label`: printable ASCII as itself, space as ␣, `\\n` `\\t` `\\r` for
  those, `\\xNN` for any other byte); the escapes are turned vertical and grey so they
  never run into the next letter.
- `plot_patch_histogram`: how many patches have each length, over a whole directory. The
  x axis is clipped at the 99.5th percentile of the lengths (`histogram_clip`), so a few
  long patches do not leave most of the width empty; the patches beyond share the last bar
  and the figure says how many they are.

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


_ESCAPES = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"}
HIST_PERCENTILE = 99.5  # the histogram's x axis ends where this share of the patches does


def byte_label(b: int) -> str:
    """A byte as an x-axis label: itself when printable ASCII, ␣ for space, an escape otherwise."""
    if b == 0x20:
        return "␣"
    if 0x21 <= b < 0x7F:
        return chr(b)
    return _ESCAPES.get(b, f"\\x{b:02x}")


def plot_entropies(path, data: bytes, entropies, patch_lengths, *, threshold: float | None,
                   start: int = 0, max_bytes: int = 120, title: str = "") -> Path:
    """Entropy per byte for bytes [start, start + max_bytes) with θ and the patch starts."""
    return _save(entropy_figure(data, entropies, patch_lengths, threshold=threshold, start=start,
                                max_bytes=max_bytes, title=title), path)


def entropy_figure(data: bytes, entropies, patch_lengths, *, threshold: float | None, start: int = 0,
                   max_bytes: int = 120, title: str = ""):
    """The figure `plot_entropies` writes (a matplotlib Figure)."""
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
    for label in ax.get_xticklabels():
        if len(label.get_text()) > 1:  # an escape: vertical, so it stays within its byte's column
            label.set_rotation(90)
            label.set_color("dimgray")
    ax.set_xlim(start - 1, max(stop, start + 1))
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"bytes {start}..{stop - 1} (vertical lines: patch starts; ␣ space, \\n newline, "
                  f"\\xNN other bytes)")
    ax.set_ylabel("entropy (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def histogram_clip(counts: dict[int, int], percentile: float = HIST_PERCENTILE) -> int | None:
    """The patch length at `percentile` of the patches, when longer patches exist (else None)."""
    lengths = np.array(sorted(counts), dtype=np.int64)
    cumulative = np.cumsum([counts[k] for k in lengths])
    clip = int(lengths[np.searchsorted(cumulative, cumulative[-1] * percentile / 100)])
    return clip if clip < lengths[-1] else None


def plot_patch_histogram(path, counts: dict[int, int], *, max_length: int | None = None, title: str = "") -> Path:
    """Bar chart of patch counts per length; lengths above `max_length` share the last bar
    (default: above the 99.5th percentile, `histogram_clip`)."""
    return _save(histogram_figure(counts, max_length=max_length, title=title), path)


def histogram_figure(counts: dict[int, int], *, max_length: int | None = None, title: str = ""):
    """The figure `plot_patch_histogram` writes (a matplotlib Figure)."""
    if not counts:
        raise ValueError("no patches to plot")
    lengths = np.array(sorted(counts), dtype=np.int64)
    values = np.array([counts[k] for k in lengths], dtype=np.int64)
    clip = None if max_length else histogram_clip(counts)
    top = int(max_length or (clip + 1 if clip else lengths.max()))
    shown = np.zeros(top + 1, dtype=np.int64)
    np.add.at(shown, np.minimum(lengths, top), values)
    total = int(values.sum())
    mean = float((lengths * values).sum() / total)
    fig = _new_figure(8.0, 4.0)
    ax = fig.add_subplot()
    ax.bar(np.arange(1, top + 1), shown[1:], width=0.85, color="tab:blue")
    ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1, label=f"mean {mean:.3g} bytes")
    note = clip_note(counts, top, clip)
    if note:
        ax.plot([], [], " ", label=note)  # the note as a legend line of its own
    overflow = f" (last bar: ≥ {top})" if lengths.max() > top else ""
    ax.set_xlabel(f"patch length (bytes){overflow}")
    ax.set_ylabel("patches")
    ax.set_title(title or f"{total:,} patches", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def clip_note(counts: dict[int, int], top: int, clip: int | None = None) -> str:
    """What the last bar holds when the axis is cut at `top` ('' when nothing is cut)."""
    total = sum(counts.values())
    beyond = sum(n for length, n in counts.items() if length >= top)
    if max(counts) <= top:
        return ""
    where = f"x clipped at {clip} (p{HIST_PERCENTILE:g})" if clip is not None else f"x clipped at --max-length {top}"
    return (f"{where}: {beyond:,} patches ({100 * beyond / total:.2g} %) ≥ {top} bytes "
            f"(longest {max(counts)}) in the last bar")
