"""Draw a document with its patches as text (`bltdata show`).

The document is cut into display cells: one per UTF-8 character that lies inside a single
patch, one per byte otherwise. Bytes that are not valid UTF-8, and the bytes of a character
that a patch boundary cuts in two, are shown escaped as ``\\xNN``; control characters other
than newline are escaped too (``\\t``, ``\\r``, ``\\xNN``). Nothing is dropped or replaced,
so every byte of the document can be read back from the output.

Two styles: in a terminal patches get alternating background colours (escapes in red);
otherwise patches are separated by ``|``, and a literal ``|`` or ``\\`` in the text is
written ``\\|`` / ``\\\\`` so the separators stay unambiguous. An optional strip under each
line shows every character's entropy (its first byte's) as a block from ▁ to █.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

BLOCKS = "▁▂▃▄▅▆▇█"
PATCH_STYLES = ({"fg": "white", "bg": "blue"}, {"fg": "black", "bg": "cyan"})
_ESCAPES = {"\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True)
class Cell:
    """One displayed unit: a character or an escaped byte."""

    text: str
    start: int          # first byte of the document it shows
    patch: int
    escaped: bool       # shown as an escape (invalid / cut character / control)
    newline: bool = False

    @property
    def width(self) -> int:
        if self.escaped or self.newline:
            return len(self.text)
        return 2 if unicodedata.east_asian_width(self.text) in ("W", "F") else 1


def patch_index_per_byte(patch_lengths, num_bytes: int) -> np.ndarray:
    lengths = np.asarray(patch_lengths, dtype=np.int64)
    if int(lengths.sum()) != num_bytes:
        raise ValueError(f"patch lengths sum to {int(lengths.sum())}, the document has {num_bytes} bytes")
    return np.repeat(np.arange(len(lengths)), lengths)


def utf8_units(data: bytes) -> list[tuple[int, int, str | None]]:
    """(start, end, character or None for an invalid byte) covering every byte in order."""
    units = []
    pos = 0
    for ch in data.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            units.append((pos, pos + 1, None))
            pos += 1
        else:
            size = len(ch.encode("utf-8"))
            units.append((pos, pos + size, ch))
            pos += size
    return units


def _char_cell(ch: str, start: int, patch: int, plain: bool) -> Cell:
    if ch == "\n":
        return Cell("\n", start, patch, escaped=False, newline=True)
    if ch in _ESCAPES:
        return Cell(_ESCAPES[ch], start, patch, escaped=True)
    if unicodedata.category(ch) == "Cc":  # escape its bytes (C1 controls are two bytes)
        return Cell("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")), start, patch, escaped=True)
    if plain and ch in "|\\":
        return Cell("\\" + ch, start, patch, escaped=True)
    return Cell(ch, start, patch, escaped=False)


def cells(data: bytes, patch_lengths, *, plain: bool) -> list[Cell]:
    """The display cells of a document (see the module docstring)."""
    patch_of = patch_index_per_byte(patch_lengths, len(data))
    out = []
    for start, end, ch in utf8_units(data):
        if ch is not None and patch_of[start] == patch_of[end - 1]:
            out.append(_char_cell(ch, start, int(patch_of[start]), plain))
        else:
            out.extend(Cell(f"\\x{data[b]:02x}", b, int(patch_of[b]), escaped=True) for b in range(start, end))
    return out


def render_plain(data: bytes, patch_lengths) -> str:
    """The document with `|` between patches (no colours, no entropy strip)."""
    return "".join(text for text, _ in _plain_parts(cells(data, patch_lengths, plain=True), None))


def _lines(all_cells: list[Cell]) -> list[list[Cell]]:
    """Split cells into display lines; a newline cell ends its line."""
    lines: list[list[Cell]] = [[]]
    for cell in all_cells:
        lines[-1].append(cell)
        if cell.newline:
            lines.append([])
    return lines if lines[-1] else lines[:-1]


def _plain_parts(line: list[Cell], prev_patch: int | None) -> list[tuple[str, Cell | None]]:
    """(text, cell) pairs of a plain line, with separator pairs (cell None) between patches."""
    parts: list[tuple[str, Cell | None]] = []
    for cell in line:
        if prev_patch is not None and cell.patch != prev_patch:
            parts.append(("|", None))
        parts.append((cell.text, cell))
        prev_patch = cell.patch
    return parts


def _style_cell(cell: Cell) -> str:
    import click

    style = dict(PATCH_STYLES[cell.patch % 2])
    if cell.newline:
        return click.style(" ", **style) + "\n"
    if cell.escaped:
        style.update(fg="red", bold=True)
    return click.style(cell.text, **style)


def _runs(all_cells: list[Cell]) -> list[list[Cell]]:
    """Consecutive cells drawn alike (same patch, same kind), so each run is styled once."""
    runs: list[list[Cell]] = []
    for cell in all_cells:
        if runs and (runs[-1][-1].patch, runs[-1][-1].escaped, runs[-1][-1].newline) == (
                cell.patch, cell.escaped, cell.newline) and not cell.newline:
            runs[-1].append(cell)
        else:
            runs.append([cell])
    return runs


def _style_run(run: list[Cell]) -> str:
    if len(run) == 1:
        return _style_cell(run[0])
    return _style_cell(Cell("".join(c.text for c in run), run[0].start, run[0].patch, run[0].escaped))


def _strip_char(entropy: float, scale: float) -> str:
    level = int(np.clip(entropy / scale * len(BLOCKS), 0, len(BLOCKS) - 1)) if scale > 0 else 0
    return BLOCKS[level]


def render(data: bytes, patch_lengths, *, color: bool, entropies=None, threshold: float | None = None,
           width: int = 100) -> str:
    """The document drawn with its patches; with `entropies` (n or n + 1 values) a strip under
    each line, wrapped at `width` columns so text and strip stay aligned."""
    all_cells = cells(data, patch_lengths, plain=not color)
    if entropies is None:
        if not color:
            return "".join(text for text, _ in _plain_parts(all_cells, None))
        return "".join(_style_run(run) for run in _runs(all_cells))
    h = np.asarray(entropies, dtype=np.float32)[:len(data)]
    scale = float(h.max()) if len(h) else 0.0
    rows = []
    prev_patch = None
    for line in _lines(all_cells):
        parts = _plain_parts(line, prev_patch) if not color else [(c.text, c) for c in line]
        for chunk in _wrap(parts, width):
            rows.append(_text_row(chunk, color))
            rows.append(_strip_row(chunk, h, scale, threshold, color))
        prev_patch = line[-1].patch if line else prev_patch
    legend = f"entropy strip: {BLOCKS[0]} = 0 … {BLOCKS[-1]} = {scale:.2f} nats"
    if threshold is not None:
        legend += f"; threshold {threshold:.4g}" + (" (red: above)" if color else "")
    return "\n".join(rows + [legend]) + "\n"


def _part_width(text: str, cell: Cell | None) -> int:
    if cell is None:
        return len(text)
    return 1 if cell.newline else cell.width


def _wrap(parts: list[tuple[str, Cell | None]], width: int) -> list[list[tuple[str, Cell | None]]]:
    chunks: list[list[tuple[str, Cell | None]]] = [[]]
    used = 0
    for text, cell in parts:
        w = _part_width(text, cell)
        if chunks[-1] and used + w > width:
            chunks.append([])
            used = 0
        chunks[-1].append((text, cell))
        used += w
    return chunks


def _text_row(chunk: list[tuple[str, Cell | None]], color: bool) -> str:
    out = []
    for text, cell in chunk:
        if cell is not None and cell.newline:
            out.append(_style_cell(cell).rstrip("\n") if color else "")
        elif color and cell is not None:
            out.append(_style_cell(cell))
        else:
            out.append(text)
    return "".join(out)


def _strip_row(chunk, h: np.ndarray, scale: float, threshold: float | None, color: bool) -> str:
    import click

    out = []
    for text, cell in chunk:
        if cell is None:
            out.append(" " * len(text))
            continue
        if cell.newline and not color:
            continue
        entropy = float(h[cell.start]) if cell.start < len(h) else 0.0
        block = _strip_char(entropy, scale) * _part_width(text, cell)
        above = threshold is not None and entropy > threshold
        out.append(click.style(block, fg="red") if (color and above) else block)
    return "".join(out)
