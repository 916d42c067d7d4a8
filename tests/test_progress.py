"""Progress of `patch`, `demo`, `train` and `entropy train`: finished work, TTY-only bars, plain lines."""
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bltdata import jobs, patch_job
from bltdata.cli.main import main
from bltdata.cli.progress import Progress, shown
from bltdata.pipelines import patch as pipeline

from test_blt_cli import write_shards


def _jsonl(path, n_docs, doc_bytes, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(n_docs):
            word = f"w{seed}x{i} "
            f.write(json.dumps({"id": f"{seed}-{i}", "text": (word * (doc_bytes // len(word) + 1))[:doc_bytes]}) + "\n")
    return path.stat().st_size


def _corpus(root):
    """Three inputs (one a pack of its own that spans several 1 MiB batches); returns total bytes."""
    sizes = [_jsonl(root / "big.jsonl", 60, 60_000, 0), _jsonl(root / "b.jsonl", 20, 500, 1),
             _jsonl(root / "c.jsonl", 20, 500, 2)]
    return sum(sizes)


def test_the_written_counter_stays_below_a_pack_until_its_shards_are_closed(tmp_path):
    size = _jsonl(tmp_path / "in" / "big.jsonl", 60, 60_000)
    job = patch_job.PatchJob(inputs=[str(tmp_path / "in" / "big.jsonl")], output=str(tmp_path / "out"), model="none",
                            mode="space", shard_bytes=2 << 20)
    prepared = patch_job.prepare(job)
    [pack] = prepared.pending_packs
    writer, patcher = pipeline.WriteShards(prepared), pipeline.PatchBatches(prepared.patcher)
    writer.start_bundle()
    seen = []
    for batch in pipeline.ReadDocumentBatches(job).process(pack):
        if getattr(batch, "tag", None) == pipeline.REJECTS:  # the pack's rejects (none here): a TaggedOutput
            continue
        for patched in patcher.process(batch):
            list(writer.process(patched))
        if batch.key in writer.progress:  # write the counter the writer holds back (it writes ≤ 1/s)
            writer.progress[batch.key].update(raw_bytes=0, force=True)
        seen.append((batch.last_in_file, jobs.read_progress(job.output)["raw_bytes"]))
    assert len(seen) >= 3  # several batches, so the counter moved within the file
    partial = [raw for last, raw in seen if not last]
    assert all(0 < raw < size for raw in partial) and partial == sorted(partial)
    assert seen[-1] == (True, size)  # the whole pack only once its last shard is closed


def _patch(args):
    return CliRunner().invoke(main, ["patch", *map(str, args), "--mode", "space"], catch_exceptions=False)


def test_patch_into_a_pipe_prints_plain_lines_and_counts_every_byte(tmp_path):
    total = _corpus(tmp_path / "in")
    result = _patch([tmp_path / "in", "-o", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("patching:")]
    assert lines and lines[-1].startswith("patching: 100%")
    counts = jobs.read_progress(tmp_path / "out")
    assert counts["raw_bytes"] == total and counts["documents"] == 100


def test_a_killed_run_counts_less_than_the_job_then_the_rest_of_it(tmp_path, reading_fails):
    total = _corpus(tmp_path / "in")
    job = patch_job.PatchJob(inputs=[str(tmp_path / "in")], output=str(tmp_path / "out"), model="none", mode="space")
    with reading_fails("c.jsonl"), pytest.raises(Exception, match="injected failure"):
        pipeline.run_job(job)
    assert 0 <= jobs.read_progress(job.output)["raw_bytes"] < total
    _, prepared = pipeline.run_job(job)  # the re-run counts what it does: the packs not done before
    rest = sum(jobs.input_size(f.path) for f in prepared.pending)
    assert 0 < rest <= total and jobs.read_progress(job.output)["raw_bytes"] == rest


def test_plain_lines_come_every_ten_percent_and_every_thirty_seconds():
    now = [0.0]
    out = io.StringIO()
    progress = Progress(100, desc="train", unit="step", mode="lines", stream=out, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] += 0.1
        progress.update(step, loss="1.0")
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("train: 100% 100/100") and "loss=1.0" in lines[-1]
    slow = io.StringIO()
    progress = Progress(1000, desc="x", unit="B", mode="lines", stream=slow, clock=lambda: now[0])
    for n in (1, 2, 3):
        now[0] += 31.0
        progress.update(n)
    assert len(slow.getvalue().splitlines()) == 3 and "\r" not in slow.getvalue()


def test_a_log_record_is_written_above_the_bar_not_into_it(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        with shown(Progress(10, desc="train", unit="step", mode="bar")) as bar:
            bar.update(3)
            logging.getLogger("bltdata.test").warning("a warning mid-run")
            bar.update(5)
    finally:
        logging.getLogger().removeHandler(handler)
    text = terminal.getvalue()
    before, after = text.split("a warning mid-run")
    assert before.endswith("\r") and after.startswith("\n")  # the bar was cleared; the record has its own line
    assert "5/10" in after  # and the bar is drawn again below it


def test_train_no_progress_prints_no_bar_and_the_default_prints_plain_lines(tmp_path):
    data = write_shards(tmp_path / "train", 200, 0)
    args = ["train", "--data", data, "--preset", "debug", "--steps", 20, "--seq-len", 65, "--batch-size", 2,
            "--device", "cpu"]
    quiet = CliRunner().invoke(main, [str(a) for a in [*args, "-o", tmp_path / "a", "--no-progress"]])
    assert quiet.exit_code == 0, quiet.output
    assert "train:" not in quiet.output and "\r" not in quiet.output and "step 20" in quiet.output
    plain = CliRunner().invoke(main, [str(a) for a in [*args, "-o", tmp_path / "b"]])
    assert plain.exit_code == 0, plain.output
    lines = [line for line in plain.output.splitlines() if line.startswith("train:")]
    assert "\r" not in plain.output and 2 <= len(lines) <= 12 and lines[-1].startswith("train: 100% 20/20")


def _patch_subprocess(tmp_path, name, *extra):
    command = [str(Path(sys.executable).with_name("bltdata")), "patch", str(tmp_path / "in"), "-o", str(tmp_path / name),
               "--mode", "space", "--workers", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_two_workers_print_no_beam_log_lines_unless_verbose(tmp_path):
    _corpus(tmp_path / "in")
    run = _patch_subprocess(tmp_path, "quiet")
    assert run.returncode == 0, run.stderr
    assert "INFO" not in run.stderr and "apache_beam" not in run.stderr and "\r" not in run.stderr
    assert "patching: 100%" in run.stderr and "this run" in run.stdout
    loud = _patch_subprocess(tmp_path, "loud", "-v")
    assert loud.returncode == 0, loud.stderr
    assert "INFO:apache_beam" in loud.stderr  # what -v shows, and what the quiet run hid


def test_quiet_beam_drops_runner_records_even_after_their_level_is_reset():
    """`distributed` sets its loggers back to INFO when imported: the root handlers' filter still drops them."""
    from bltdata.cli.progress import NOISY_LOGGERS, quiet_beam

    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    scheduler, ours = logging.getLogger("distributed.scheduler"), logging.getLogger("bltdata.jobs")
    try:
        quiet_beam(False)
        logging.getLogger("distributed").setLevel(logging.INFO)  # what `import distributed` does
        scheduler.info("State start")
        scheduler.error("a real problem")
        ours.warning("our own warning")
        assert stream.getvalue().splitlines() == ["a real problem", "our own warning"]
        quiet_beam(True)  # -v: everything again
        logging.getLogger("distributed").setLevel(logging.INFO)
        scheduler.info("State start")
        assert stream.getvalue().splitlines()[-1] == "State start"
    finally:
        root.removeHandler(handler)
        quiet_beam(True)  # takes the filter off the root handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
