"""The text drawing of patches (`bltdata show`): lossless, escapes, colours, entropy strip."""
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bltdata.inspect.render import BLOCKS, cells, render, render_plain, utf8_units

_TOKEN = re.compile(r"\\x([0-9a-f]{2})|\\t|\\r|\\\\|\\\||\||(.)", re.S)


def parse_plain(text: str) -> tuple[bytes, list[int]]:
    """Invert `render_plain`: the document bytes and its patch lengths."""
    out, lengths, current = bytearray(), [], 0
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if token == "|":
            lengths.append(current)
            current = 0
            continue
        if m.group(1):
            piece = bytes([int(m.group(1), 16)])
        else:
            piece = {"\\t": b"\t", "\\r": b"\r", "\\\\": b"\\", "\\|": b"|"}.get(token) or token.encode()
        out += piece
        current += len(piece)
    if out:
        lengths.append(current)
    return bytes(out), lengths


def random_lengths(draw, n: int) -> list[int]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=n))) - {n}) if n > 1 else []
    edges = [0] + cuts + [n]
    return [b - a for a, b in zip(edges, edges[1:]) if b > a]


@st.composite
def documents(draw):
    pieces = draw(st.lists(st.one_of(st.text(max_size=8).map(lambda s: s.encode("utf-8")),
                                     st.binary(max_size=4)), max_size=8))
    data = b"".join(pieces)
    return data, random_lengths(draw, len(data))


@settings(max_examples=300, deadline=None)
@given(documents())
def test_plain_rendering_is_lossless(doc):
    data, lengths = doc
    assert parse_plain(render_plain(data, lengths)) == (data, lengths)


def test_invalid_bytes_and_cut_characters_are_escaped():
    data = "é|\\".encode() + b"\xff"
    assert render_plain(data, [1, 1, 1, 1, 1]) == "\\xc3|\\xa9|\\||\\\\|\\xff"
    assert render_plain(data, [2, 3]) == "é|\\|\\\\\\xff"
    escaped = [c for c in cells(data, [2, 3], plain=True) if c.escaped]
    assert len(escaped) == 3


def test_newline_kept_and_controls_escaped():
    data = b"ab\ncd\tx\x01"
    assert render_plain(data, [3, 5]) == "ab\n|cd\\tx\\x01"
    assert [u[2] for u in utf8_units(b"a\xffb")] == ["a", None, "b"]


def test_colour_mode_alternates_styles():
    out = render(b"one two", [4, 3], color=True)
    assert "\x1b[44m" in out and "\x1b[46m" in out      # two background colours
    assert "|" not in out
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == "one two"


def test_entropy_strip_is_aligned_with_text():
    data = b"ab cd\nef"
    h = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 0.0, 4.0, 0.0], np.float32)
    out = render(data, [3, 3, 2], color=False, entropies=h, threshold=2.5, width=80)
    lines = out.splitlines()
    text_rows, strip_rows = lines[0:-1:2], lines[1:-1:2]
    assert len(text_rows) == 2 and lines[-1].startswith("entropy strip")
    for text_row, strip_row in zip(text_rows, strip_rows):
        assert len(text_row) == len(strip_row)
        assert all((t == "|") == (s == " ") for t, s in zip(text_row, strip_row))
    assert strip_rows[0][0] == BLOCKS[0] and strip_rows[0][-1] == BLOCKS[-1]  # H=0 → ▁, H=max → █
