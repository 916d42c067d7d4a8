"""The README's ```bash and ```python blocks run as written, in order, in one fresh directory.

A block preceded by `<!-- not-run: reason -->` is skipped (GPUs, several nodes, Dataflow,
released checkpoints that are not here). In the quick start, the `pip install` and `pytest`
parts are left out (the package is installed; this is the test suite), the rest runs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->\s*$")
SKIPPED_STEPS = ("pip ", "pytest")


def readme_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, not-run reason or None) for every bash/python block, in order."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        reason = NOT_RUN.search(before[-1]) if before else None
        blocks.append((match.group(1), match.group(2), reason.group(1) if reason else None))
    return blocks


def without_installs(code: str) -> str:
    """Drop the `pip install ...` and `pytest` steps of `a && b && c` lines."""
    lines = []
    for line in code.splitlines():
        steps = [s.strip() for s in line.split("&&") if not s.strip().startswith(SKIPPED_STEPS)]
        if steps:
            lines.append(" && ".join(steps))
    return "\n".join(lines)


def test_readme_blocks_are_found_and_few_are_skipped():
    blocks = readme_blocks(README.read_text())
    skipped = [reason for _, _, reason in blocks if reason]
    assert len(blocks) >= 8 and sum(lang == "python" for lang, _, _ in blocks) >= 2
    assert len(skipped) <= 8, skipped  # GPU, cluster, downloaded checkpoints, Dataflow only
    assert "bltdata demo" in without_installs(blocks[0][1])
    assert "pip" not in without_installs(blocks[0][1])


@pytest.mark.slow
def test_readme_runs_in_order(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    ran = 0
    for index, (lang, code, reason) in enumerate(readme_blocks(README.read_text())):
        if reason:
            continue
        code = without_installs(code) if index == 0 else code
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"README block {index} ({lang}) failed:\n{code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 7
