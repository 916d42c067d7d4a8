"""bltdata.patch_job: every option declared once, and identical in `bltdata patch` and the argparse entry point."""
import dataclasses
import json

import pytest
from click.testing import CliRunner

from bltdata import patch_job
from bltdata.cli.main import main
from bltdata.options import spec_of, value_type
from bltdata.patch_job import DEFAULT_CALIBRATION_BYTES, PatchJob, PatchRun
from bltdata.pipelines import patch as pipeline

FIELDS = [(cls, f) for cls in (PatchJob, PatchRun) for f in dataclasses.fields(cls)]
IDS = [f"{cls.__name__}.{f.name}" for cls, f in FIELDS]
BOUNDED = [(cls, f) for cls, f in FIELDS if spec_of(cls, f).min is not None]
CHOICES = [(cls, f) for cls, f in FIELDS if spec_of(cls, f).choices is not None]
PREPARE = patch_job.prepare  # the real one (the click_job fixture replaces the one `bltdata patch` calls)


class Captured(Exception):
    """Raised by the stand-in runner: the click command stops once it has built the job."""


@pytest.fixture
def click_job(monkeypatch):
    """argv → (job, run, result) as `bltdata patch` builds them (nothing is prepared or run)."""
    from bltdata.cli import patch as cli_patch

    seen = {}

    def prepare(job):
        seen["job"] = job
        return job

    def run_with_progress(pipeline, prepared, beam_args, workers, runner, progress, dask, verbose=False):
        seen["run"] = PatchRun(workers=workers, **dask)
        raise Captured

    monkeypatch.setattr(pipeline, "prepare", prepare)  # what `bltdata patch` reaches, through prepare_checked
    monkeypatch.setattr(cli_patch, "_run_with_progress", run_with_progress)

    def invoke(argv):
        seen.clear()
        result = CliRunner().invoke(main, ["patch", *argv])
        return seen.get("job"), seen.get("run"), result
    return invoke


def _sample(cls, f):
    """A value of the field other than its default, inside its bounds."""
    spec, kind = spec_of(cls, f), value_type(cls, f)
    if spec.positional:
        return ["a.jsonl", "b/"]
    if kind is bool:
        return True
    if spec.choices is not None:
        return next(c for c in spec.choices if c != f.default)
    if kind in (int, float):
        value = kind((spec.min or 0) + 3) + (0.5 if kind is float else 0)
        return value + 1 if value == f.default else value
    return "some-value"


def _argv(overrides: dict, output: str) -> list[str]:
    """INPUT... -o OUT and one flag per override, built from the fields' own declarations."""
    inputs = overrides.pop("inputs", ["in.jsonl"])
    argv = [*inputs, "-o", overrides.pop("output", output)]
    for name, value in overrides.items():
        cls = PatchJob if name in {f.name for f in dataclasses.fields(PatchJob)} else PatchRun
        flag = spec_of(cls, next(f for f in dataclasses.fields(cls) if f.name == name)).flag(name)
        argv += [flag] if value is True else [flag, str(value)]
    return argv


@pytest.mark.parametrize("cls, f", FIELDS, ids=IDS)
def test_every_field_declares_an_option(cls, f):
    spec = spec_of(cls, f)  # TypeError for a field made without bltdata.options.option
    assert spec.help.strip()
    assert value_type(cls, f) in (str, int, float, bool)


@pytest.mark.parametrize("cls, f", FIELDS, ids=IDS)
def test_every_field_is_settable_from_both_command_lines(cls, f, click_job, tmp_path):
    value = _sample(cls, f)
    assert value != f.default
    argv = _argv({f.name: value}, str(tmp_path / "out"))
    job, run, result = click_job(argv)
    assert isinstance(result.exception, Captured), result.output
    parsed_job, beam_args, parsed_run = pipeline.parse_args(argv)
    assert beam_args == []
    assert getattr(job if cls is PatchJob else run, f.name) == value
    assert getattr(parsed_job if cls is PatchJob else parsed_run, f.name) == value
    assert (job, run) == (parsed_job, parsed_run)


def test_defaults_are_the_fields_defaults_in_both(click_job, tmp_path):
    argv = ["in.jsonl", "-o", str(tmp_path / "out")]
    job, run, _ = click_job(argv)
    parsed_job, _, parsed_run = pipeline.parse_args(argv)
    assert job == parsed_job == PatchJob(inputs=["in.jsonl"], output=str(tmp_path / "out"))
    assert run == parsed_run == PatchRun()
    checked = [f.name for f in dataclasses.fields(PatchJob)
               if f.name not in ("inputs", "output") and getattr(job, f.name) == f.default]
    assert len(checked) == len(dataclasses.fields(PatchJob)) - 2


@pytest.mark.parametrize("beam_args, kwargs, processes", [
    ([], {}, 1),
    ([], {"workers": 3}, 3),
    (["--runner", "DirectRunner"], {"workers": 2}, 2),
    ([], {"runner": "DaskRunner", "workers": 2}, 2),  # a LocalCluster of --workers processes
    ([], {"runner": "DaskRunner", "workers": 2, "dask_workers": 4}, 4),
    ([], {"runner": "DaskRunner", "dask_address": "tcp://sched:8786"}, None),
    (["--runner=DaskRunner", "--dask_client_address=tcp://sched:8786"], {}, None),
    (["--runner", "DataflowRunner", "--project=p"], {"workers": 2}, None),
    ([], {"runner": "FlinkRunner"}, None),
])
def test_local_processes_decide_the_threads_default(beam_args, kwargs, processes, monkeypatch):
    assert pipeline.local_processes(beam_args, **kwargs) == processes
    monkeypatch.setattr(patch_job.os, "cpu_count", lambda: 8)
    job = PatchJob(inputs=["x"], output="o")
    if processes:
        assert patch_job.with_worker_threads(job, processes).threads == 8 // processes
    assert patch_job.with_worker_threads(dataclasses.replace(job, threads=3), 2).threads == 3
    assert patch_job.with_worker_threads(job, 16).threads == 1


@pytest.mark.parametrize("cls, f", BOUNDED, ids=[f"{c.__name__}.{f.name}" for c, f in BOUNDED])
def test_values_below_the_bound_are_refused_by_both(cls, f, click_job, tmp_path, capsys):
    spec = spec_of(cls, f)
    low = value_type(cls, f)(spec.min) - 1
    argv = _argv({f.name: low}, str(tmp_path / "out"))
    job, _, result = click_job(argv)
    assert job is None and result.exit_code == 2 and spec.flag(f.name) in result.output
    with pytest.raises(SystemExit) as exit_:
        pipeline.parse_args(argv)
    assert exit_.value.code == 2 and spec.flag(f.name) in capsys.readouterr().err
    base = {"inputs": ["x"], "output": "o"} if cls is PatchJob else {}
    with pytest.raises(ValueError, match=spec.flag(f.name)):
        cls(**base, **{f.name: low})  # built in Python: the same bound
    assert len(BOUNDED) >= 8


@pytest.mark.parametrize("cls, f", CHOICES, ids=[f"{c.__name__}.{f.name}" for c, f in CHOICES])
def test_unknown_choices_are_refused_by_both(cls, f, click_job, tmp_path, capsys):
    argv = _argv({f.name: "bogus"}, str(tmp_path / "out"))
    job, _, result = click_job(argv)
    assert job is None and result.exit_code == 2 and "bogus" in result.output
    with pytest.raises(SystemExit) as exit_:
        pipeline.parse_args(argv)
    assert exit_.value.code == 2 and "bogus" in capsys.readouterr().err
    with pytest.raises(ValueError, match=spec_of(cls, f).flag(f.name)):
        PatchJob(inputs=["x"], output="o", **{f.name: "bogus"})
    assert {f.name for _, f in CHOICES} == {"mode", "device", "precision"}


def test_option_combinations_refused_by_both(click_job, tmp_path, capsys):
    for extra in (["--threshold", "2", "--target-patch-size", "4"], ["--mode", "space", "--target-patch-size", "4"]):
        argv = ["in.jsonl", "-o", str(tmp_path / "out"), *extra]
        job, _, result = click_job(argv)
        assert job is None and result.exit_code == 2 and "--target-patch-size" in result.output
        with pytest.raises(SystemExit) as exit_:
            pipeline.parse_args(argv)
        assert exit_.value.code == 2 and "--target-patch-size" in capsys.readouterr().err


def test_an_existing_file_as_output_is_refused_by_both(click_job, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["in.jsonl", "-o", str(tmp_path / "file")]
    assert click_job(argv)[2].exit_code == 2
    with pytest.raises(SystemExit):
        pipeline.parse_args(argv)
    assert "is a file" in capsys.readouterr().err


def test_help_texts_are_the_declared_ones():
    click_params = {p.name: p for p in main.commands["patch"].params}
    actions = {a.dest: a for a in pipeline.argument_parser()._actions}
    for cls, f in FIELDS:
        spec = spec_of(cls, f)
        assert actions[f.name].help.startswith(spec.help.replace("%", "%%"))
        if not spec.positional:  # INPUT... is the click command's own argument (Beam's options follow it)
            assert click_params[f.name].help.startswith(spec.help)


def test_calibration_bytes_reach_the_calibration(tmp_path, monkeypatch, click_job):
    from bltdata.entropy import calibrate

    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"document {i} " * 20}) + "\n" for i in range(20)))
    asked = []

    def calibrate_from_documents(engine, documents, target, config, *, max_bytes):
        asked.append((target, max_bytes))
        return 1.75, {}

    monkeypatch.setattr(calibrate, "calibrate_from_documents", calibrate_from_documents)
    argv = [str(corpus), "-o", str(tmp_path / "a"), "--target-patch-size", "4", "--calibration-bytes", "5000",
            "--device", "cpu", "--threads", "1"]
    prepared = PREPARE(pipeline.parse_args(argv)[0])
    assert asked == [(4.0, 5000)] and prepared.patcher.threshold == 1.75
    job = click_job(argv[:2] + [str(tmp_path / "b")] + argv[3:])[0]
    PREPARE(job)
    assert asked[1] == (4.0, 5000)
    PREPARE(dataclasses.replace(job, output=str(tmp_path / "c"), calibration_bytes=DEFAULT_CALIBRATION_BYTES))
    assert asked[2] == (4.0, DEFAULT_CALIBRATION_BYTES)


def test_run_job_gives_the_local_workers_their_share_of_the_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(patch_job.os, "cpu_count", lambda: 6)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i} " * 5}) + "\n" for i in range(5)))
    job = PatchJob(inputs=[str(corpus)], output=str(tmp_path / "out"), mode="space")
    _, prepared = pipeline.run_job(job, runner="DirectRunner", workers=1)
    assert job.threads is None and prepared.job.threads == 6
    _, again = pipeline.run_job(dataclasses.replace(job, threads=2))  # done already: nothing runs
    assert again.job.threads == 2 and again.pending == []


def _wrong_field_corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}", "id": i, "url": "u"}) + "\n" for i in range(121)))
    return path


def test_a_wrong_text_field_stops_prepare_before_the_output_is_made(tmp_path):
    out = tmp_path / "out"
    job = PatchJob(inputs=[str(_wrong_field_corpus(tmp_path))], output=str(out), mode="space", text_field="nope")
    with pytest.raises(ValueError, match="docs.jsonl: no record among the first 100 has field 'nope'"):
        PREPARE(job)
    assert not out.exists()


def test_a_wrong_text_field_is_a_one_line_usage_error_of_the_cli(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["patch", str(_wrong_field_corpus(tmp_path)), "-o", str(out), "--mode",
                                       "space", "--text-field", "nope"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: docs.jsonl: no record among the first 100 has field 'nope' (--text-field); "
                      "their fields: text, id, url"]
    assert "Traceback" not in result.output and not out.exists()


def test_cuda_without_cuda_is_refused_before_a_local_job(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["patch", str(_wrong_field_corpus(tmp_path)), "-o", str(out),
                                       "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == "Error: --device cuda was asked for but CUDA is not available here"
    assert "Traceback" not in result.output and not out.exists()
    job = PatchJob(inputs=[str(tmp_path / "docs.jsonl")], output=str(out), device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available here"):  # the library refuses it too
        pipeline.run_job(job)
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--runner", "DataflowRunner"],
                                  ["--runner", "DaskRunner", "--dask-address", "tcp://scheduler:8786"]],
                         ids=["dataflow", "dask-cluster"])
def test_cuda_for_remote_workers_is_not_refused_here(argv, click_job, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    job, _, result = click_job(["in.jsonl", "-o", str(tmp_path / "out"), "--device", "cuda", *argv])
    assert isinstance(result.exception, Captured), result.output  # reached the (stand-in) run
    assert job.device == "cuda"


def test_a_wrong_text_field_is_a_usage_error_of_the_module_entry_point_too(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        pipeline.run([str(_wrong_field_corpus(tmp_path)), "-o", str(out), "--mode", "space", "--text-field", "nope"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: docs.jsonl: no record among the first 100 has field 'nope' (--text-field); their fields: text, id, url")
    assert not out.exists()
