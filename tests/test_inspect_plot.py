"""bltdata.inspect.plot: readable byte labels and a histogram clipped at a high percentile, saying so."""
import numpy as np
import pytest

from bltdata.inspect.plot import (byte_label, clip_note, entropy_figure, histogram_clip, histogram_figure,
                                  plot_entropies, plot_patch_histogram)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("byte, label", [(ord("a"), "a"), (ord("~"), "~"), (0x20, "␣"), (0x0A, "\\n"),
                                         (0x09, "\\t"), (0x0D, "\\r"), (0x00, "\\x00"), (0x7F, "\\x7f"),
                                         (0xC3, "\\xc3"), (0xFF, "\\xff")])
def test_byte_label(byte, label):
    assert byte_label(byte) == label


def test_entropy_labels_do_not_run_into_each_other(tmp_path):
    data = (b"def f(x):\n\treturn x  # caf\xc3\xa9\r\n" * 6)[:120]
    entropies = np.linspace(0, 3, len(data) + 1)
    fig = entropy_figure(data, entropies, [4] * 30, threshold=1.3)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = fig.axes[0].get_xticklabels()
    assert [label.get_text() for label in labels[8:12]] == [":", "\\n", "\\t", "r"]
    extents = [label.get_window_extent(renderer) for label in labels]
    assert len(extents) == 120
    gaps = [right.x0 - left.x1 for left, right in zip(extents, extents[1:])]
    assert min(gaps) >= 2, min(gaps)  # pixels between neighbouring labels, escapes included
    path = plot_entropies(tmp_path / "doc.png", data, entropies, [4] * 30, threshold=1.3)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


LONG_TAIL = {1: 100, 2: 500, 3: 300, 4: 90, 5: 9, 80: 1}  # one 80-byte patch in 1000


def test_histogram_clip_is_the_99_5th_percentile():
    assert histogram_clip(LONG_TAIL) == 5  # 999 of 1000 patches are ≤ 5 bytes
    assert histogram_clip({1: 10, 2: 990}) is None  # nothing beyond the percentile: no clip
    assert histogram_clip({4: 100}) is None
    assert histogram_clip({**{k: 1 for k in range(1, 201)}}) == 199  # ceil(0.995 · 200)


def test_histogram_says_where_it_is_clipped_and_what_is_beyond(tmp_path):
    note = "x clipped at 5 (p99.5): 1 patches (0.1 %) ≥ 6 bytes (longest 80) in the last bar"
    assert clip_note(LONG_TAIL, 6, 5) == note
    fig = histogram_figure(LONG_TAIL)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 7  # not out to 80
    assert [bar.get_height() for bar in ax.patches] == [100, 500, 300, 90, 9, 1]
    assert note in [text.get_text() for text in ax.get_legend().get_texts()]
    assert "last bar: ≥ 6" in ax.get_xlabel()
    explicit = histogram_figure(LONG_TAIL, max_length=3).axes[0]  # --max-length: cut there, said too
    assert [bar.get_height() for bar in explicit.patches] == [100, 500, 400]
    assert "x clipped at --max-length 3: 400 patches (40 %) ≥ 3 bytes" in " ".join(t.get_text() for t in explicit.get_legend().get_texts())
    unclipped = histogram_figure({1: 3, 2: 5}).axes[0]
    assert len(unclipped.get_legend().get_texts()) == 1  # only the mean
    assert plot_patch_histogram(tmp_path / "h.png", LONG_TAIL).read_bytes()[:8] == PNG_SIGNATURE
