"""The patching pipeline (Apache Beam): corpus files → entropies → patches → Parquet shards.

    input files ─► Reshuffle (file metadata only) ─► ReadDocumentBatches ─► ScoreDocBatches
        (EntropyModelHandler: batched, exact chunking) ─► PatchBatches ─► WriteShards
    ReadDocumentBatches' `rejects` output (one element per pack) ─► WriteRejects
    (all packs done: WriteShards and WriteRejects both) ─► WriteManifest

Each input file is read by one worker, which cuts its documents into `DocBatch`es in file
order; the batches pass through scoring and patching in the same fused stage and reach the
shard writer in order, so each file's shards are written while it is streamed, in constant
memory. Document bytes never cross a fusion break (only file names are reshuffled).
Output names and contents depend only on the inputs and the options, so runs are
deterministic and a re-run skips the files already complete (see `bltdata.jobs`). The job's
options and what is decided before the graph is built (inputs, θ, packs) are in
`bltdata.patch_job`; this module holds the Beam graph and its runner.

Run it from the command line with `bltdata patch`, or directly with any Beam runner:

    python -m bltdata.pipelines.patch INPUT... --output OUT [project flags] \\
        --runner DataflowRunner --project P --region R --temp_location gs://... \\
        --dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver \\
        --sdk_container_image=IMAGE
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import threading
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.options.pipeline_options import PipelineOptions

from bltdata import batching, fs, jobs, readers, shards, sink
from bltdata.device import DeviceUnavailable, resolve_device, set_threads
from bltdata.options import add_arguments, values_of
from bltdata.patch_config import PatcherConfig
from bltdata.patch_job import PatchJob, PatchRun, PreparedJob, prepare, with_worker_threads
from bltdata.pipelines import dask_cluster

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "bltdata"
DEFAULT_RUNNER = "FnApiRunner"
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner")  # their workers are processes here
WORK_UNIT_BYTES = 1 << 20  # document bytes per DocBatch (one RunInference element)


# ----------------------------------------------------------------------------- DoFns


class _CountingReader(io.RawIOBase):
    """A raw file wrapper that counts the bytes read (for the progress display)."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n


REJECTS = "rejects"  # ReadDocumentBatches' tagged output: (pack key, [reject dict, ...]), one per pack


class ReadDocumentBatches(beam.DoFn):
    """One pack → its `DocBatch`es in file order; its rejects, whole, on the `REJECTS` output.

    The rejects are emitted once per pack, with the last batch (an empty list too, so that
    `WriteRejects` removes a file left by an earlier attempt); the last batch carries their
    count, which its completion record keeps, so a resumed run can tell that a pack's
    rejects are missing (`jobs.read_done`).
    """

    def __init__(self, job: PatchJob):
        self.job = job
        self.documents = Metrics.counter(METRICS_NAMESPACE, "documents")
        self.bytes = Metrics.counter(METRICS_NAMESPACE, "bytes")
        self.read_ms = Metrics.counter(METRICS_NAMESPACE, "read_ms")

    def process(self, pack: jobs.Pack) -> Iterable[batching.DocBatch]:
        rejects: list[dict] = []
        position = {"raw": 0}  # input bytes of the pack read so far (the reader reads ahead ~1 MiB)
        before = {f.source: fs.input_stat(f.path) for f in pack.files}
        pack_bytes = sum(jobs.input_size(f.path) for f in pack.files)
        documents = self._pack_documents(pack, rejects, position)
        started = time.perf_counter()
        for batch in batching.iter_doc_batches(documents, source=pack.files[0].source, key=pack.key,
                                               batch_bytes=max(self.job.batch_bytes or 0, WORK_UNIT_BYTES),
                                               shard_bytes=self.job.shard_bytes):
            self.read_ms.inc(int(1000 * (time.perf_counter() - started)))
            batch.raw_end = min(position["raw"], pack_bytes - 1)  # all of it only with the last batch
            if batch.last_in_file:  # every document is read: check the files stayed the same
                for f in pack.files:
                    if fs.input_stat(f.path) != before[f.source]:
                        raise RuntimeError(f"{f.source} changed while it was being read; run again")
                batch.rejected = len(rejects)
                batch.input_stat = jobs.pack_stat(pack, before)
                batch.raw_end = pack_bytes
                yield beam.pvalue.TaggedOutput(REJECTS, (pack.key, rejects))
            yield batch
            started = time.perf_counter()

    def _pack_documents(self, pack: jobs.Pack, rejects, position):
        finished_raw = 0  # raw bytes of the pack's files already read
        for input_file in pack.files:
            with _open_input(input_file, text_field=self.job.text_field, id_field=self.job.id_field) as (records,
                                                                                                       counter):
                for record in records:
                    position["raw"] = finished_raw + counter()
                    if isinstance(record, readers.Reject):
                        rejects.append(record.to_json())
                        continue
                    self.documents.inc()
                    self.bytes.inc(len(record.data))
                    yield record
            finished_raw += jobs.input_size(input_file.path)


@contextlib.contextmanager
def _open_input(input_file: readers.InputFile, **fields):
    """(records iterator, raw-bytes-read function) for one input file; a file that cannot be
    opened is one whole-file reject naming its path."""
    f = input_file
    if f.format == "parquet" or fs.is_remote(f.path):
        yield readers.read_input(f, **fields), lambda: 0
        return
    try:
        raw = readers.open_local(f.path, buffering=0)
    except readers.UnreadableInput as exc:
        unreadable = readers.Reject(f.source, 0, str(exc))
    else:
        unreadable = None
    if unreadable is not None:  # yielded outside the except: an error in the body is not chained to it
        yield iter([unreadable]), lambda: 0
        return
    handle = _CountingReader(raw)
    try:
        stream = io.BufferedReader(handle, buffer_size=1 << 20)
        yield readers.read_records(stream, f.source, f.format, **fields), lambda: handle.count
    finally:
        handle.raw.close()


def _is_batch(element) -> bool:
    return isinstance(element, batching.DocBatch)


def _is_not_batch(element) -> bool:
    return not isinstance(element, batching.DocBatch)


class WriteRejects(beam.DoFn):
    """(pack key, rejects) → `rejected/<key>.jsonl`, written whole and atomically; yields the key."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.rejected = Metrics.counter(METRICS_NAMESPACE, "rejected")

    def process(self, element: tuple[str, list[dict]]):
        key, rejects = element
        if not rejects:  # a file left by an earlier, interrupted attempt
            fs.remove(shards.rejects_path(self.out_dir, key))
        self.rejected.inc(shards.write_rejects(self.out_dir, key, rejects))
        yield key


class EntropyModelHandler(ModelHandler):
    """RunInference handler: a `DocBatch` in, the same batch with its entropies out.

    Each element is already a byte-budgeted batch of documents, so Beam's own batching is
    fixed at one element per call (stable memory, no empty batches); the engine buckets the
    documents by length, pads, and splits long ones into exact chunks.
    """

    def __init__(self, model: str, *, device: str, batch_bytes: int, threads: int | None = None,
                 compile: bool = False, precision: str = "auto"):
        super().__init__()
        self.model, self.device, self.batch_bytes, self.threads = model, device, batch_bytes, threads
        self.compile, self.precision = compile, precision
        self.load_ms = Metrics.counter(METRICS_NAMESPACE, "load_ms")
        self.score_ms = Metrics.counter(METRICS_NAMESPACE, "score_ms")

    def load_model(self):
        from bltdata.entropy.checkpoint import load_checkpoint
        from bltdata.entropy.engine import EntropyEngine

        started = time.perf_counter()
        set_threads(self.threads)
        device = resolve_device(self.device)
        model = load_checkpoint(self.model, device=device)
        engine = EntropyEngine(model, device=device, batch_bytes=self.batch_bytes, compile=self.compile,
                               precision=self.precision)
        engine.unreported_load_ms = int(1000 * (time.perf_counter() - started))  # counted at the first batch
        return engine

    def run_inference(self, batch: Sequence[batching.DocBatch], model, inference_args=None):
        started = time.perf_counter()
        if getattr(model, "threads_set_in", None) != threading.get_ident():
            # torch's thread count must be set in the thread that runs the model: Beam calls
            # load_model in another one, and there 2 threads ran 13-25× slower than 1 (measured)
            set_threads(self.threads)
            model.threads_set_in = threading.get_ident()
        for doc_batch in batch:
            doc_batch.entropies = model.score(doc_batch.data) if doc_batch.data else []
        self.score_ms.inc(int(1000 * (time.perf_counter() - started)))
        if getattr(model, "unreported_load_ms", 0):  # load_model runs outside a bundle, where counters are lost
            self.load_ms.inc(model.unreported_load_ms)
            model.unreported_load_ms = 0
        return list(batch)

    def get_num_bytes(self, batch: Sequence[batching.DocBatch]) -> int:
        return sum(b.num_bytes for b in batch)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}

    def get_metrics_namespace(self) -> str:
        return "bltdata_inference"


_ENGINE_CACHE: dict = {}  # this process's entropy engine, by handler settings (one entry)


class ScoreDocBatches(beam.DoFn):
    """Each `DocBatch` → the same batch with its entropies, emitted from `process`.

    Used instead of RunInference on every runner: RunInference's BatchElements holds the
    last element of a bundle until `finish_bundle`, whose output Beam's DaskRunner drops
    (see `pipelines.dask_cluster`). Each element is already a byte-budgeted batch, so
    nothing is lost by not batching again. The engine is kept per process: the DaskRunner
    calls `setup` once per partition.
    """

    def __init__(self, handler: EntropyModelHandler):
        self.handler = handler

    def setup(self):
        h = self.handler
        key = (h.model, h.device, h.batch_bytes, h.threads, h.compile, h.precision)
        if key not in _ENGINE_CACHE:
            _ENGINE_CACHE.clear()
            _ENGINE_CACHE[key] = h.load_model()
        self.engine = _ENGINE_CACHE[key]

    def process(self, batch: batching.DocBatch):
        yield from self.handler.run_inference([batch], self.engine)


class PatchBatches(beam.DoFn):
    def __init__(self, patcher: PatcherConfig):
        self.patcher = patcher
        self.patches = Metrics.counter(METRICS_NAMESPACE, "patches")
        self.patch_ms = Metrics.counter(METRICS_NAMESPACE, "patch_ms")

    def process(self, batch: batching.DocBatch):
        started = time.perf_counter()
        batching.patch_doc_batch(batch, self.patcher)
        self.patch_ms.inc(int(1000 * (time.perf_counter() - started)))
        self.patches.inc(sum(len(p) for p in batch.patch_lengths))
        yield batch


class WriteShards(beam.DoFn):
    """Writes batches into shards (in file order) and yields each finished file's record."""

    def __init__(self, prepared: PreparedJob):
        self.out_dir = prepared.job.output
        self.options = dict(patcher=prepared.patcher.to_dict(), entropy_model=prepared.entropy_model,
                            store_entropies=prepared.job.store_entropies, data_dir=jobs.data_dir_of(prepared.params))
        self.shards = Metrics.counter(METRICS_NAMESPACE, "shards")
        self.files = Metrics.counter(METRICS_NAMESPACE, "files")
        self.write_ms = Metrics.counter(METRICS_NAMESPACE, "write_ms")

    def start_bundle(self):
        self.sink = sink.ShardSink(self.out_dir, **self.options)
        self.progress: dict[str, jobs.ProgressFile] = {}

    def process(self, batch: batching.DocBatch):
        started = time.perf_counter()
        record = self.sink.consume(batch)
        self.write_ms.inc(int(1000 * (time.perf_counter() - started)))
        self._count_written(batch, record)
        if record is not None:
            self.files.inc()
            self.shards.inc(len(record.shards))
            yield record.source

    def _count_written(self, batch: batching.DocBatch, record) -> None:
        """Progress counts a batch once the writer has it; a pack's last bytes once its shards are closed."""
        progress = self.progress.get(batch.key)
        if progress is None:
            progress = self.progress[batch.key] = jobs.ProgressFile(self.out_dir, batch.key)
        progress.add(documents=len(batch.data), bytes_=batch.num_bytes)
        if record is not None:
            progress.update(raw_bytes=batch.raw_end, force=True)
            del self.progress[batch.key]
        else:
            progress.update(raw_bytes=batch.raw_end)

    def finish_bundle(self):
        unfinished = self.sink.unfinished()
        if unfinished:
            self.sink.abort()
            raise RuntimeError(f"the batches of {unfinished} did not all reach the shard writer in one bundle; "
                               f"this runner splits fused stages, which the writer does not support")


class WriteManifest(beam.DoFn):
    def __init__(self, prepared: PreparedJob):
        self.out_dir = prepared.job.output
        self.packs = prepared.packs
        self.params = prepared.params
        self.patcher = prepared.patcher.to_dict()
        self.entropy_model = prepared.entropy_model

    def process(self, finished: list[str]):  # sources (shards) and keys (rejects)
        manifest = jobs.finish(self.out_dir, self.packs, self.params, patcher=self.patcher,
                               entropy_model=self.entropy_model)
        yield manifest.totals


# ----------------------------------------------------------------------------- transforms


class PatchCorpus(beam.PTransform):
    """Input files → shards; the output is a PCollection holding the manifest's totals."""

    def __init__(self, prepared: PreparedJob):
        super().__init__()
        self.prepared = prepared

    def expand(self, files):
        job = self.prepared.job
        read = (files
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadDocumentBatches" >> beam.ParDo(ReadDocumentBatches(job)).with_outputs(REJECTS, main="batches"))
        # Beam 2.77's DaskRunner gives every consumer of a multi-output ParDo all its outputs
        # (its bags are per transform, not per output): each branch keeps only its own kind.
        batches = read.batches | "OnlyBatches" >> beam.Filter(_is_batch)
        rejects = (read[REJECTS]
                   | "OnlyRejects" >> beam.Filter(_is_not_batch)
                   | "WriteRejects" >> beam.ParDo(WriteRejects(job.output)))
        if job.needs_model:
            handler = EntropyModelHandler(job.model, device=job.device, batch_bytes=job.batch_bytes,
                                          threads=job.threads, compile=job.compile, precision=job.precision)
            batches = batches | "ScoreEntropies" >> beam.ParDo(ScoreDocBatches(handler))
        finished = (batches
                    | "PatchBatches" >> beam.ParDo(PatchBatches(self.prepared.patcher))
                    | "WriteShards" >> beam.ParDo(WriteShards(self.prepared)))
        # The manifest waits for both branches: a pack is complete with its shards and its rejects.
        return ((finished, rejects)
                | "ShardsAndRejects" >> beam.Flatten()
                | "AllFilesDone" >> beam.combiners.ToList()
                | "WriteManifest" >> beam.ParDo(WriteManifest(self.prepared)))


def build_pipeline(pipeline: beam.Pipeline, prepared: PreparedJob):
    files = pipeline | "InputFiles" >> beam.Create(prepared.pending_packs, reshuffle=False)
    return files | "PatchCorpus" >> PatchCorpus(prepared)


# ----------------------------------------------------------------------------- preparing and running


def beam_options(beam_args: Sequence[str], *, workers: int = 1, runner: str | None = None) -> PipelineOptions:
    """Beam options with the project's defaults: FnApiRunner, multi-processing for --workers."""
    from apache_beam.options.pipeline_options import StandardOptions

    args = list(beam_args)
    chosen = PipelineOptions(args).view_as(StandardOptions).runner
    if chosen is None:
        chosen = runner or DEFAULT_RUNNER
        args.append(f"--runner={chosen}")
    if chosen in LOCAL_RUNNERS and workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
        if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
            args.append("--default_sdk_harness_log_level=WARNING")  # worker processes log INFO otherwise
    return PipelineOptions(args, save_main_session=False)


def run_job(job: PatchJob, beam_args: Sequence[str] = (), *, workers: int = 1, runner: str | None = None,
            prepared: PreparedJob | None = None, dask_address: str | None = None, dask_workers: int | None = None):
    """Prepare and run a patching job to completion; returns (PipelineResult, PreparedJob).

    On DaskRunner: the cluster at `dask_address` (or `--dask_client_address`), else a
    LocalCluster of `dask_workers` (default `workers`) processes for this run only. A job
    without `threads` gets the CPUs shared among the local worker processes (none on a
    remote runner: its workers keep torch's default).
    """
    from apache_beam.options.pipeline_options import StandardOptions

    processes = local_processes(beam_args, workers=workers, runner=runner, dask_address=dask_address,
                                dask_workers=dask_workers)
    check_local_device(job, processes)
    prepared = prepared or prepare(job)
    if processes:
        prepared = dataclasses.replace(prepared, job=with_worker_threads(prepared.job, processes))
    if dask_cluster.is_dask(PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or runner):
        address = dask_address or dask_cluster.given_address(beam_args)
        with dask_cluster.scheduler(address, dask_workers or workers) as address:
            options = beam_options(dask_cluster.dask_beam_args(beam_args, address))
            pipeline = beam.Pipeline(options=options)
            build_pipeline(pipeline, prepared)
            result = pipeline.run()
            dask_cluster.wait(result)
        return result, prepared
    options = beam_options(beam_args, workers=workers, runner=runner)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, prepared)
    result = pipeline.run()
    result.wait_until_finish()
    return result, prepared


# What `prepare_checked` refuses a job with before anything runs: the command lines' usage errors
REFUSALS = (ValueError, FileNotFoundError, DeviceUnavailable)


def prepare_checked(job: PatchJob, beam_args: Sequence[str] = (), *, workers: int = 1, runner: str | None = None,
                    dask_address: str | None = None, dask_workers: int | None = None) -> PreparedJob:
    """`prepare(job)` after `check_local_device` for the run these arguments describe: a job that
    cannot start (a wrong --text-field, missing inputs, --device cuda without CUDA on a local
    runner) raises one of `REFUSALS` before its output directory is touched."""
    check_local_device(job, local_processes(beam_args, workers=workers, runner=runner, dask_address=dask_address,
                                            dask_workers=dask_workers))
    return prepare(job)


def check_local_device(job: PatchJob, processes: int | None) -> None:
    """Raise `DeviceUnavailable` (one line) before anything runs when the job's model would run on a
    device this machine lacks and its workers are local (`processes` from `local_processes`).

    On a remote runner (`processes` None: Dataflow, a Dask cluster at an address) `--device cuda`
    is for the workers' machines and is not checked here.
    """
    if processes is not None and job.needs_model:
        resolve_device(job.device)


def local_processes(beam_args: Sequence[str], *, workers: int = 1, runner: str | None = None,
                    dask_address: str | None = None, dask_workers: int | None = None) -> int | None:
    """How many worker processes of this run share this machine's CPUs; None on a remote runner."""
    from apache_beam.options.pipeline_options import StandardOptions

    chosen = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or runner or DEFAULT_RUNNER
    if dask_cluster.is_dask(chosen):
        remote = dask_address or dask_cluster.given_address(beam_args)
        return None if remote else dask_workers or workers
    return workers if chosen in LOCAL_RUNNERS else None


def metric_totals(result, prepared: PreparedJob | None = None) -> dict[str, int]:
    """The job's Beam counters (documents, bytes, patches, rejected, ...), by name.

    On a runner without metrics (DaskRunner), the counts come from the completion records
    of the inputs this run processed (`prepared.pending`); timing counters are then absent.
    """
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except NotImplementedError:
        if prepared is None:
            raise
        return record_totals(prepared)
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def record_totals(prepared: PreparedJob) -> dict[str, int]:
    """documents, bytes, patches, rejected, shards, files of this run, from its completion records."""
    totals = dict.fromkeys(("documents", "bytes", "patches", "rejected", "shards", "files"), 0)
    for pack in prepared.pending_packs:
        record = jobs.read_done(prepared.job.output, pack.key, data_dir=jobs.data_dir_of(prepared.params))
        if record is None:
            raise RuntimeError(f"{pack.label}: no completion record in {prepared.job.output} after the run")
        totals["documents"] += record.documents
        totals["bytes"] += sum(s.bytes for s in record.shards)
        totals["patches"] += sum(s.patches for s in record.shards)
        totals["rejected"] += record.rejected
        totals["shards"] += len(record.shards)
        totals["files"] += len(pack.files)
    return totals


def argument_parser() -> argparse.ArgumentParser:
    """The project's flags: the fields of `PatchJob` and `PatchRun`, as `bltdata patch` has them."""
    parser = argparse.ArgumentParser(prog="python -m bltdata.pipelines.patch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, PatchJob)
    add_arguments(parser, PatchRun)
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[PatchJob, list[str], PatchRun]:
    """Split the project's flags (`PatchJob`, `PatchRun`) from Beam's (everything unknown goes to PipelineOptions)."""
    parser = argument_parser()
    known, beam_args = parser.parse_known_args(argv)
    try:
        run = PatchRun(**values_of(PatchRun, vars(known)))
        job = PatchJob(**values_of(PatchJob, vars(known)))
    except ValueError as e:  # what the fields' own checks refuse (e.g. --threshold with --target-patch-size)
        parser.error(str(e))
    return job, beam_args, run


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point for `python -m bltdata.pipelines.patch`; returns the Beam counters."""
    job, beam_args, patch_run = parse_args(argv)
    local = dict(workers=patch_run.workers, dask_address=patch_run.dask_address, dask_workers=patch_run.dask_workers)
    try:
        prepared = prepare_checked(job, beam_args, **local)
    except REFUSALS as e:  # a usage error
        argument_parser().error(str(e))
    result, prepared = run_job(job, beam_args, prepared=prepared, **local)
    return metric_totals(result, prepared)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(run())
