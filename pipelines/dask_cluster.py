"""Running the patching pipeline on Dask (Beam's DaskRunner): a scheduler to run on, and its options.

With no address, a `LocalCluster` of N worker processes (one thread each) is started for
the run and shut down after it; with an address (`tcp://host:8786`, e.g. a dask-jobqueue
SLURMCluster's scheduler) that cluster is used as it is. Three things differ from
FnApiRunner, all read from Beam 2.77's `apache_beam/runners/dask/`:

- `Reshuffle` is translated to a no-op and each `Create` partition is one bundle, so the
  input files are spread over workers only by the partition size: one input per partition.
- `apply_dofn_to_bundle` collects a DoFn's outputs *before* calling `finish_bundle`, so what
  a DoFn emits there is lost (RunInference's BatchElements emits its last batch there);
  every DoFn of this pipeline emits from `process` only.
- `DaskRunnerResult.metrics()` raises NotImplementedError: counts come from the completion
  records instead (`pipelines.patch.metric_totals`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Sequence

log = logging.getLogger(__name__)

DASK_RUNNER = "DaskRunner"
DASK_RUNNER_CLASS = "apache_beam.runners.dask.dask_runner.DaskRunner"  # Beam knows it only by this name
PARTITION_FLAGS = ("--dask_partition_size", "--dask_npartitions")
ADDRESS_FLAG = "--dask_client_address"


def is_dask(runner: str | None) -> bool:
    return runner in (DASK_RUNNER, DASK_RUNNER_CLASS)


def given_address(beam_args: Sequence[str]) -> str | None:
    """The scheduler address passed as Beam's own `--dask_client_address`, if any."""
    for i, arg in enumerate(beam_args):
        if arg.startswith(ADDRESS_FLAG + "="):
            return arg.split("=", 1)[1]
        if arg == ADDRESS_FLAG and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return None


def dask_beam_args(beam_args: Sequence[str], address: str) -> list[str]:
    """Beam's options for a DaskRunner run on `address`, one input file per partition by default."""
    args, skip = [], False
    for arg in beam_args:  # the runner is named by its class below
        if not skip and not arg.startswith("--runner"):
            args.append(arg)
        skip = arg == "--runner"
    args.append(f"--runner={DASK_RUNNER_CLASS}")
    if not any(a.startswith(PARTITION_FLAGS) for a in args):
        args.append("--dask_partition_size=1")
    if given_address(args) is None:
        args.append(f"{ADDRESS_FLAG}={address}")
    return args


@contextlib.contextmanager
def scheduler(address: str | None = None, workers: int = 1) -> Iterator[str]:
    """Yield a scheduler address: `address` itself, or a LocalCluster's, closed on exit."""
    if address:
        yield address
        return
    try:
        from distributed import LocalCluster
    except ImportError as e:
        raise RuntimeError("--runner DaskRunner needs dask and distributed: pip install 'bltdata[dask]'") from e
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    log.info("Dask LocalCluster of %d worker process(es) at %s", workers, cluster.scheduler_address)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def wait(result) -> None:
    """Wait for a DaskRunner result (worker errors are raised here), then close Beam's client."""
    try:
        result.wait_until_finish()
    finally:
        result.client.close()
