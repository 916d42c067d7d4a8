"""Optional dependencies: a missing extra is one line naming what to install, never a traceback."""
import sys

import pytest
from click.testing import CliRunner

from bltdata import extras
from bltdata.cli.main import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_require_names_the_extra(monkeypatch):
    extras.require("patching")  # installed here
    monkeypatch.setitem(sys.modules, "numba", None)  # what a node without the extra sees
    with pytest.raises(extras.MissingExtra) as caught:
        extras.require("pipeline")
    assert caught.value.extra == "pipeline"
    assert str(caught.value) == "needs the pipeline extra (numba is not installed): pip install 'bltdata[pipeline]'"


def test_patch_without_beam_prints_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    result = invoke("patch", tmp_path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Error: bltdata patch needs the pipeline extra (apache_beam is not installed): "
        "pip install 'bltdata[pipeline]'"]
    assert not (tmp_path / "out").exists()


def test_stats_without_polars_prints_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "polars", None)
    result = invoke("stats", tmp_path)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Error: bltdata stats needs the inspect extra (polars is not installed): pip install 'bltdata[inspect]'"]


def test_an_unguarded_import_of_an_extra_is_caught_once_by_the_group(monkeypatch, tmp_path):
    """`entropy score` imports the numba kernels without an explicit `require`: the group names the extra."""
    import bltdata.cli.entropy as entropy_cli

    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "bltdata.patching", raising=False)
    monkeypatch.setattr(entropy_cli, "_load_model", lambda model_dir, device: None)
    monkeypatch.setitem(sys.modules, "bltdata.entropy.engine", type(sys)("stub"))
    sys.modules["bltdata.entropy.engine"].EntropyEngine = lambda *a, **k: None
    result = invoke("entropy", "score", "default", "--text", "hi")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "Error: bltdata entropy needs the patching extra (numba is not installed): pip install 'bltdata[patching]'"]


def test_other_import_errors_propagate(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ImportError("cannot import name 'x' from 'bltdata.somewhere'", name="bltdata.somewhere")

    monkeypatch.setattr(extras, "require", broken)
    result = invoke("stats", tmp_path)
    assert isinstance(result.exception, ImportError) and "bltdata.somewhere" in str(result.exception)
