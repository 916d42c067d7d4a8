"""A patching job's options and everything decided before the Beam graph is built.

`PatchJob` holds the project's own options of a run (Beam's options travel separately) and
`PatchRun` how the local run is spread over processes; each field declares its command-line
option once (`bltdata.options`), and both `bltdata patch` (click) and
`python -m bltdata.pipelines.patch` (argparse) are derived from these declarations.
`prepare` lists the inputs, identifies the entropy model, chooses θ (calibrating it when a
target patch size is asked for), plans the packs and checks the output directory, so that
`bltdata.pipelines.patch` holds only the Beam graph. Importing this module is cheap (no
torch, numba, Beam or pyarrow): the command line builds its options from it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from bltdata import readers
from bltdata.device import DEVICES, PRECISIONS, job_precision, resolve_device, set_threads
from bltdata.options import check_options, option
from bltdata.patch_config import DEFAULT_THRESHOLD, ENTROPY_MODES, MODES, PatcherConfig

DEFAULT_SHARD_BYTES = 256 << 20
DEFAULT_CALIBRATION_BYTES = 2 << 20


@dataclass
class PatchJob:
    """The project's own options of a patching run; every field is a command-line option."""

    inputs: list[str] = option(positional=True, metavar="INPUT", help="Input files (.jsonl, .jsonl.zst, "
                               ".jsonl.gz, .txt: one document per file, .parquet), directories of them, or "
                               "glob patterns.")
    output: str = option(flags=("-o", "--output"), directory=True,
                         help="Output directory OUT: the shards go in OUT/data/ (a plain Parquet dataset), "
                              "manifest.json and rejected/ in OUT.")
    model: str = option("default", help="Entropy model: 'default' (bundled) or a checkpoint directory.")
    mode: str = option("entropy", choices=MODES, help="Patching rule (docs/design.md §3).")
    threshold: float | None = option(None, help="θ in nats.", default_text="the model's recommended θ in "
                                     f"entropy mode, else the reference's {DEFAULT_THRESHOLD:.4f}")
    target_patch_size: float | None = option(None, min=1, help="Choose θ on a sample (--calibration-bytes) so "
                                             "the mean patch is this many bytes.")
    threshold_add: float | None = option(None, help="Extra relative threshold of entropy mode.")
    max_patch_length: int | None = option(None, min=1, help="Split longer patches.")
    patch_size: int = option(4, min=1, help="P of static mode.")
    store_entropies: bool = option(False, help="Also store the n+1 per-byte entropies (float16).")
    text_field: str = option(readers.DEFAULT_TEXT_FIELD, help="JSON/Parquet field holding the text.")
    id_field: str = option(readers.DEFAULT_ID_FIELD, help="JSON/Parquet field holding the id.")
    batch_bytes: int | None = option(None, min=1, help="Positions per entropy-model forward pass, padding "
                                     "included.", default_text="4096 on CPU, 262144 on CUDA")
    shard_bytes: int = option(DEFAULT_SHARD_BYTES, min=1, help="Document bytes per shard; small input files "
                              "are packed together up to this much file size.")
    calibration_bytes: int = option(DEFAULT_CALIBRATION_BYTES, min=1, help="Document bytes (the first, in "
                                    "input order) that --target-patch-size calibrates θ on.")
    device: str = option("auto", choices=DEVICES, help="Where the entropy model runs.")
    threads: int | None = option(None, min=1, help="torch threads per worker process.",
                                 default_text="on a local runner (FnApiRunner, a Dask LocalCluster) the CPUs "
                                 "shared among its processes, elsewhere torch's default on the worker")
    compile: bool = option(False, help="torch.compile the entropy model in each worker: for long CUDA runs; "
                           "costs a warm-up per worker, and on CPU needs a C++ compiler.")
    precision: str = option("auto", choices=("auto",) + PRECISIONS, help="Entropy model arithmetic (changes "
                            "the entropies; recorded in the manifest). auto: bf16 on CUDA and on CPUs with "
                            "AVX512-BF16/AMX, else fp32.")

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("give at least one INPUT file, directory or glob")
        check_options(self)
        if self.threshold is not None and self.target_patch_size is not None:
            raise ValueError("give --threshold or --target-patch-size, not both")
        if self.target_patch_size is not None and self.mode not in ENTROPY_MODES:
            raise ValueError(f"--target-patch-size calibrates θ of the entropy/monotonic modes, not {self.mode!r}")

    @property
    def needs_model(self) -> bool:
        return self.mode in ENTROPY_MODES or self.store_entropies

    def patcher(self, threshold: float | None) -> PatcherConfig:
        theta = threshold if threshold is not None else DEFAULT_THRESHOLD
        return PatcherConfig(mode=self.mode, threshold=theta, threshold_add=self.threshold_add,
                             max_patch_length=self.max_patch_length, patch_size=self.patch_size)


@dataclass
class PatchRun:
    """How a local run is spread over processes; it never changes the output (not recorded)."""

    workers: int = option(1, min=1, help="Local worker processes (FnApiRunner multi-processing).")
    dask_address: str | None = option(None, help="DaskRunner: the scheduler (tcp://host:8786).",
                                      default_text="a LocalCluster for this run")
    dask_workers: int | None = option(None, min=1, help="DaskRunner: LocalCluster worker processes, one "
                                      "thread each.", default_text="--workers")

    def __post_init__(self):
        check_options(self)


def with_worker_threads(job: PatchJob, processes: int) -> PatchJob:
    """The job with --threads resolved for `processes` local workers: as given, else the CPUs shared among them."""
    if job.threads is not None:
        return job
    return dataclasses.replace(job, threads=max(1, (os.cpu_count() or 1) // processes))


@dataclass
class PreparedJob:
    """A job with everything resolved before the graph is built: files, θ, model identity."""

    job: PatchJob
    files: list[readers.InputFile]
    pending: list[readers.InputFile]  # the files of the pending packs
    patcher: PatcherConfig
    entropy_model: dict | None
    params: dict = field(default_factory=dict)
    threshold_choice: object = None  # bltdata.entropy.calibrate.ThresholdChoice (θ, its source, its target)
    packs: list = field(default_factory=list)  # jobs.Pack: every unit of work, in input order
    pending_packs: list = field(default_factory=list)  # jobs.Pack without a completion record
    seconds: float = 0.0  # spent preparing (listing, calibration), before the pipeline runs


def prepare(job: PatchJob) -> PreparedJob:
    """List inputs, check the text field on a sample, identify the model, choose θ, plan the packs and
    check/create the output directory. A wrong --text-field raises `readers.FieldMissing` (a ValueError)."""
    from bltdata import jobs, shards  # pyarrow: imported on use, so the CLI's options stay cheap
    from bltdata.entropy.calibrate import choose_threshold

    started = time.perf_counter()
    job = dataclasses.replace(job, precision=job_precision(job.precision, job.device))  # workers use what is recorded
    files = readers.list_inputs(job.inputs, exclude=[job.output])
    readers.check_text_field(files, job.text_field, job.id_field)  # a wrong field: an error, not N rejects
    entropy_model = None
    if job.needs_model:
        from bltdata.entropy.checkpoint import checkpoint_metadata

        entropy_model = checkpoint_metadata(job.model)
    theta = choose_threshold(job.model if job.mode in ENTROPY_MODES else None, job.mode,
                             threshold=job.threshold, target_patch_size=job.target_patch_size,
                             calibrate=lambda: calibrate(job, files))
    patcher = job.patcher(theta.threshold)
    params = job_params(job, files, patcher, entropy_model)
    if jobs.written_before_packing(job.output):  # resumed as it was written: one pack per file
        packs = jobs.one_pack_per_file(files)
    else:
        packs = jobs.plan_packs(files, [jobs.input_size(f.path) for f in files], job.shard_bytes)
        params["packing"] = jobs.packing_digest(packs)
    if not jobs.written_before_data_dir(job.output):  # else resumed as written: shards directly in OUT
        params["data_dir"] = shards.DATA_DIR
    jobs.prepare_output(job.output, params)
    records = {p.key: jobs.read_done(job.output, p.key, data_dir=jobs.data_dir_of(params)) for p in packs}
    jobs.changed_inputs(job.output, [(records[p.key], jobs.pack_stat(p)) for p in packs if records[p.key]])
    pending_packs = [p for p in packs if records[p.key] is None]
    return PreparedJob(job=job, files=files, pending=[f for p in pending_packs for f in p.files], patcher=patcher,
                       entropy_model=entropy_model, params=params, threshold_choice=theta, packs=packs,
                       pending_packs=pending_packs, seconds=time.perf_counter() - started)


def job_params(job: PatchJob, files, patcher: PatcherConfig, entropy_model: dict | None) -> dict:
    """What the manifest records about the run: everything that shapes the shards' contents.

    Batch size, device, compilation and worker count are left out: they must not change the
    output (beyond float rounding on CUDA, where bf16 kernels differ by device and shape).
    The precision is in (when a model is used): fp32, bf16 and int8 give different entropies.
    """
    return {
        "sources": [f.source for f in files],
        "patcher": patcher.to_dict(),
        "target_patch_size": job.target_patch_size,
        "entropy_model": entropy_model,
        "store_entropies": job.store_entropies,
        "text_field": job.text_field,
        "id_field": job.id_field,
        "shard_bytes": job.shard_bytes,
        **({"precision": job.precision} if job.needs_model else {}),  # it changes the entropies
    }


def calibrate(job: PatchJob, files: list[readers.InputFile]) -> float:
    """θ giving mean patch length ≈ target, from the first `calibration_bytes` of the corpus."""
    from bltdata.entropy.calibrate import calibrate_from_documents
    from bltdata.entropy.checkpoint import load_checkpoint
    from bltdata.entropy.engine import EntropyEngine

    set_threads(job.threads)
    device = resolve_device(job.device)
    engine = EntropyEngine(load_checkpoint(job.model, device=device), device=device, batch_bytes=job.batch_bytes,
                           precision=job.precision)
    documents = (record.data for f in files
                 for record in readers.read_input(f, text_field=job.text_field, id_field=job.id_field)
                 if isinstance(record, readers.Document))
    theta, _ = calibrate_from_documents(engine, documents, job.target_patch_size, job.patcher(None),
                                        max_bytes=job.calibration_bytes)
    return theta
