"""`bltdata patch` and `bltdata demo`: run the Beam patching pipeline from the command line."""
import os
import sys
import threading
import time

import click

from bltdata import extras, patch_job
from bltdata.cli.progress import progress_option, quiet_beam, verbose_option
from bltdata.options import click_options, values_of
from bltdata.patch_job import PatchJob, PatchRun


def _split_beam_args(arguments):
    """INPUT... then, from the first argument that starts with '-', Beam's own options."""
    for i, arg in enumerate(arguments):
        if arg.startswith("-"):
            return list(arguments[:i]), list(arguments[i:])
    return list(arguments), []


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED, metavar="INPUT... [-- BEAM_OPTIONS]")
@click_options(PatchJob)
@click_options(PatchRun)
@click.option("--runner", default="FnApiRunner", show_default=True,
              help="Beam runner (DaskRunner, DataflowRunner, FlinkRunner, ...; pass their options after --).")
@progress_option
@verbose_option
def patch(arguments, runner, progress, verbose, **options):
    """Patch a corpus into Parquet shards with the Apache Beam pipeline.

    INPUT: .jsonl, .jsonl.zst, .jsonl.gz, .txt (one document per file) or .parquet files,
    directories of them, or glob patterns. The shards are written to OUT/data/, which holds
    nothing else, so any Parquet reader opens it as a dataset (pl.read_parquet("OUT/data"));
    `manifest.json` and `rejected/` go in OUT. Re-running with the same options on the same OUT finishes an
    interrupted run and skips the inputs already done. The same options are taken by
    `python -m bltdata.pipelines.patch` (for any Beam runner).

    \b
    Examples:
      bltdata patch corpus/ -o shards/
      bltdata patch 'data/*.jsonl.zst' -o shards/ --target-patch-size 4.5 --workers 2
      bltdata patch docs/ -o shards/ --mode space --max-patch-length 16
      bltdata patch corpus/ -o shards/ --runner DaskRunner --dask-workers 4
      bltdata patch /mnt/in -o /mnt/out --runner DataflowRunner -- \\
          --project=P --region=R --temp_location=gs://b/tmp --sdk_container_image=IMAGE
    """
    extras.require("pipeline")
    from bltdata.pipelines import patch as pipeline

    quiet_beam(verbose)
    inputs, beam_args = _split_beam_args(arguments)
    try:
        run = PatchRun(**values_of(PatchRun, options))
        job = PatchJob(inputs=inputs, **values_of(PatchJob, options))
        prepared = pipeline.prepare_checked(job, beam_args, workers=run.workers, runner=runner,
                                            dask_address=run.dask_address, dask_workers=run.dask_workers)
    except pipeline.REFUSALS as e:
        raise click.UsageError(str(e)) from None
    dask = {"dask_address": run.dask_address, "dask_workers": run.dask_workers}
    summary = _run_with_progress(pipeline, prepared, beam_args, run.workers, runner, progress, dask, verbose)
    _print_summary(summary)


def _run_with_progress(pipeline, prepared, beam_args, workers, runner, progress, dask=None, verbose=False):
    """Run the job in a thread while this one draws progress from the workers' counters."""
    from bltdata import fs, jobs
    from bltdata.cli.progress import child_logs_filtered, display_mode

    mode = "off" if fs.is_remote(prepared.job.output) else display_mode(progress)
    total = sum(jobs.input_size(f.path) for f in prepared.pending)
    outcome = {}

    def target():
        try:
            outcome["result"], _ = pipeline.run_job(prepared.job, beam_args, workers=workers, runner=runner,
                                                    prepared=prepared, **(dask or {}))
        except BaseException as e:  # re-raised in the main thread
            outcome["error"] = e

    started = time.perf_counter()
    with child_logs_filtered(enabled=not verbose):
        thread = threading.Thread(target=target, name="beam-pipeline", daemon=True)
        thread.start()
        _draw_progress(thread, prepared.job.output, total, mode, jobs)
    if "error" in outcome:
        raise click.ClickException(f"pipeline failed: {outcome['error']}") from outcome["error"]
    wall = time.perf_counter() - started
    counters = pipeline.metric_totals(outcome["result"], prepared)
    from bltdata import shards

    manifest = shards.read_manifest(prepared.job.output)
    return {"counters": counters, "totals": manifest.totals, "wall": wall,
            "skipped": len(prepared.files) - len(prepared.pending), "output": prepared.job.output,
            "dataset_dir": jobs.shard_dir(prepared.job.output, manifest.data_dir),
            "rejected_dir": fs.join(prepared.job.output, shards.REJECTED_DIR),
            "threshold": prepared.patcher.threshold, "mode": prepared.patcher.mode,
            "threshold_choice": prepared.threshold_choice, "prepare": prepared.seconds}


def _draw_progress(thread, output, total, mode, jobs):
    """Poll the shard writers' counters (input bytes whose shards are written) until the job ends."""
    from bltdata.cli.progress import Progress, shown

    if mode == "off":
        thread.join()
        return
    with shown(Progress(total, desc="patching", unit="B", unit_scale=True, mode=mode)) as progress:
        while thread.is_alive():
            thread.join(0.5)
            counts = jobs.read_progress(output)
            progress.update(counts["raw_bytes"], docs=f"{counts['documents']:,}")


def _print_summary(summary):
    c, t, wall = summary["counters"], summary["totals"], summary["wall"]
    processed = c.get("bytes", 0)
    mean = t["bytes"] / t["patches"] if t["patches"] else float("nan")
    lines = [
        f"output            {summary['output']}",
        f"this run          {c.get('documents', 0):,} documents, {processed:,} bytes, "
        f"{c.get('patches', 0):,} patches, {c.get('rejected', 0):,} rejected "
        f"({summary['skipped']} input(s) already done, skipped)",
        f"pipeline time     {wall:.1f} s ({processed / wall / 1e6:.3f} MB/s of document bytes)",
        _time_split(c, wall, summary.get("prepare", 0.0)),
        f"dataset           {t['shards']:,} shards, {t['documents']:,} documents, {t['bytes']:,} bytes, "
        f"{t['patches']:,} patches, {t['rejected']:,} rejected",
        f"mean patch        {mean:.3f} bytes (mode {summary['mode']}"
        + (f", θ {summary['threshold']:.6f})" if summary["mode"] in ("entropy", "monotonic") else ")"),
        *_threshold_lines(summary.get("threshold_choice"), summary["mode"], mean),
        "rejected records  " + (f"{t['rejected']:,} records in {summary['rejected_dir']} (source, line/row, reason)"
                                 if t["rejected"] else "none"),
        *_dataset_lines(summary["dataset_dir"], summary["output"]),
    ]
    click.echo("\n".join(lines))


def _dataset_lines(dataset_dir, output):
    """Where the Parquet dataset is and how to open it with the usual readers."""
    if os.path.normpath(str(dataset_dir)) == os.path.normpath(str(output)):  # a job begun before data/
        return [f"parquet dataset   {dataset_dir}/*.parquet (shards beside manifest.json and rejected/: "
                f"a job begun before data/ existed; open the files, not the directory)"]
    return [f"parquet dataset   {dataset_dir} (only the shards: open the directory with any Parquet reader)",
            f'  polars  pl.read_parquet("{dataset_dir}")     pyarrow  pq.read_table("{dataset_dir}")',
            f"  duckdb  SELECT count(*) FROM '{dataset_dir}/*.parquet'",
            f'  HF      datasets.load_dataset("parquet", data_files="{dataset_dir}/*.parquet", split="train")']


def _threshold_lines(choice, mode, mean):
    """Where θ came from, and a warning when the mean patch is far from what θ was calibrated for."""
    if choice is None or mode not in ("entropy", "monotonic"):
        return []
    warning = choice.mismatch(mean)
    return [f"threshold         {choice.describe()}"] + ([f"WARNING           {warning}"] if warning else [])


TIME_SPLIT = (("read", "read_ms"), ("model load", "load_ms"), ("entropies", "score_ms"), ("patch", "patch_ms"),
              ("write", "write_ms"))


def _time_split(counters, wall, prepare):
    """Where the pipeline time went, from the workers' timing counters (summed over workers)."""
    spent = {name: counters.get(key, 0) / 1000 for name, key in TIME_SPLIT}
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in spent.items())
    return (f"time split        {parts}, other (Beam start-up, scheduling) {max(0.0, wall - sum(spent.values())):.1f} s"
            f"; before it: prepare (listing, calibration) {prepare:.1f} s")


@click.command()
@click.option("-o", "--output", default="bltdata-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the corpus and shards go.")
@click.option("--max-bytes", default=400_000, show_default=True, type=click.IntRange(min=1000),
              help="Size of the slice of the embedded corpus to patch.")
@click_options(PatchRun, skip=("dask_address", "dask_workers"))
@progress_option
@verbose_option
def demo(output, max_bytes, workers, progress, verbose):
    """Patch the embedded default corpus with the bundled entropy model, end to end.

    The corpus is built from this Python's own standard library (its .py sources and the
    English docs in pydoc_data), so nothing is downloaded. Prints the run's summary and one
    document drawn with its patches.

    \b
    Example:
      bltdata demo -o /tmp/demo
    """
    extras.require("pipeline")
    from bltdata import corpus
    from bltdata.pipelines import patch as pipeline

    quiet_beam(verbose)

    corpus_dir = os.path.join(output, "corpus")
    os.makedirs(corpus_dir, exist_ok=True)
    corpus_file = corpus.write_default_corpus(corpus_dir, max_bytes=max_bytes)
    job = PatchJob(inputs=[str(corpus_file)], output=os.path.join(output, "shards"), store_entropies=True)
    try:
        prepared = patch_job.prepare(job)
    except (ValueError, FileNotFoundError) as e:
        raise click.UsageError(str(e)) from None
    summary = _run_with_progress(pipeline, prepared, [], workers, None, progress, verbose=verbose)
    _print_summary(summary)
    _show_one_document(job.output)
    click.echo(_next_commands(output))


def _next_commands(output):
    """The three commands to try after the demo, on its own output."""
    shards_dir, corpus_dir = os.path.join(output, "shards"), os.path.join(output, "corpus")
    return "\n".join([
        "\nnext, try:",
        f"  bltdata verify {shards_dir}                  # every manifest figure against the shards",
        f"  bltdata show {shards_dir} --row 3 --entropies  # one document, its patches and entropies",
        f"  bltdata patch {corpus_dir} -o shards-space --mode space   # patch without a model",
    ])


def _show_one_document(shard_dir):
    """Draw one mid-sized document with its patches (alternating colours or '|')."""
    from bltdata import shards

    shard = shards.shard_files(shard_dir)[0]
    rows = [r for r in shards.iter_rows(shard, columns=["doc_id", "bytes", "patch_lengths"]) if 200 <= len(r["bytes"]) <= 2000]
    if not rows:
        return
    row = rows[len(rows) // 2]
    click.echo(f"\ndocument {row['doc_id']} ({len(row['bytes'])} bytes, {len(row['patch_lengths'])} patches):\n")
    from bltdata.inspect.render import render

    click.echo(render(row["bytes"], row["patch_lengths"], color=sys.stdout.isatty()))


COMMANDS = [patch, demo]
