"""The command line and the configs import without the heavy libraries (numba, torch, Beam)."""
import subprocess
import sys

import pytest

HEAVY = ("numba", "torch", "apache_beam", "pyarrow", "polars")

_PROBE = """
import sys
sys.argv = ["bltdata", *{args!r}]
{statement}
print(sorted(m for m in {heavy!r} if m in sys.modules))
"""

_RUN_MAIN = """
from bltdata.cli.main import main
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
"""


def _heavy_modules_after(statement: str, args=()) -> list[str]:
    code = _PROBE.format(args=list(args), statement=statement, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])  # the printed list of module names


@pytest.mark.parametrize("statement", [
    "import bltdata.cli.main",
    "import bltdata.patch_config",
    "import bltdata.entropy.names",
])
def test_import_pulls_nothing_heavy(statement):
    assert _heavy_modules_after(statement) == []


@pytest.mark.parametrize("args", [["--help"], ["patch", "--help"], ["repatch", "--help"],
                                  ["entropy", "train", "--help"], ["entropy", "score", "--help"]])
def test_help_pulls_nothing_heavy(args):
    assert _heavy_modules_after(_RUN_MAIN, args) == []


def test_probe_sees_a_heavy_import():
    """The probe itself works: importing the kernels does pull numba."""
    assert "numba" in _heavy_modules_after("import bltdata.patching")


def test_entropy_preset_names_match_the_presets():
    from bltdata.entropy.model import PRESETS
    from bltdata.entropy.names import PRESET_NAMES

    assert PRESET_NAMES == tuple(PRESETS)


def test_patching_reexports_the_config():
    from bltdata import patch_config, patching

    assert patching.PatcherConfig is patch_config.PatcherConfig
    assert patching.MODES is patch_config.MODES and patching.DEFAULT_THRESHOLD == patch_config.DEFAULT_THRESHOLD


def test_cli_choices_are_the_library_values():
    from click import Choice

    from bltdata.cli.entropy import entropy
    from bltdata.cli.tools import repatch
    from bltdata.device import DEVICES, PRECISIONS
    from bltdata.entropy.names import PRESET_NAMES
    from bltdata.patch_config import ENTROPY_MODES, MODES

    def choices(command, name):
        param = next(p for p in command.params if p.name == name)
        assert isinstance(param.type, Choice)
        return tuple(param.type.choices)

    assert choices(repatch, "mode") == MODES
    assert choices(entropy.commands["score"], "mode") == ENTROPY_MODES
    assert choices(entropy.commands["train"], "preset") == PRESET_NAMES
    assert choices(entropy.commands["score"], "device") == DEVICES
    assert choices(entropy.commands["score"], "precision") == ("auto",) + PRECISIONS
