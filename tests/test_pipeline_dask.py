"""The patching pipeline on Beam's DaskRunner (a LocalCluster of 2 worker processes) equals FnApiRunner."""
import os
import signal
import threading
import time

import pytest

from bltdata import jobs, shards
from bltdata.patch_job import PatchJob
from bltdata.pipelines import patch as pipeline
from test_pipeline import corpus, digests  # noqa: F401  (module fixtures reused; tiny_model is in conftest)

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.dask

OPTIONS = dict(store_entropies=True, batch_bytes=4096, shard_bytes=3000)


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster for the module (start-up costs seconds): 2 processes, 1 thread each."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


def run_dask(corpus, out, model, address, **kw):
    job = PatchJob(inputs=[str(corpus)], output=str(out), model=model, **{**OPTIONS, **kw})
    result, prepared = pipeline.run_job(job, runner="DaskRunner", dask_address=address)
    return pipeline.metric_totals(result, prepared)


def run_fnapi(corpus, out, model, **kw):
    job = PatchJob(inputs=[str(corpus)], output=str(out), model=model, **{**OPTIONS, **kw})
    result, prepared = pipeline.run_job(job)
    return pipeline.metric_totals(result, prepared)


@pytest.fixture(scope="module")
def fnapi_entropy(corpus, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fnapi") / "out"
    return out, run_fnapi(corpus, out, tiny_model)


def test_entropy_mode_on_dask_equals_fnapi(corpus, tiny_model, cluster, fnapi_entropy, tmp_path):
    """Byte-identical shards, manifest and rejects; the counts come from the completion records."""
    base, base_counters = fnapi_entropy
    counters = run_dask(corpus, tmp_path / "dask", tiny_model, cluster.scheduler_address)
    expected = digests(base)
    assert len([f for f in expected if f.endswith(".parquet")]) > 5
    assert digests(tmp_path / "dask") == expected
    assert shards.validate(tmp_path / "dask") == []
    for name in ("documents", "bytes", "patches", "rejected"):
        assert counters[name] == base_counters[name] > 0, name


def test_space_mode_on_dask_equals_fnapi(corpus, cluster, tmp_path):
    base_counters = run_fnapi(corpus, tmp_path / "fnapi", "default", mode="space", store_entropies=False)
    counters = run_dask(corpus, tmp_path / "dask", "default", cluster.scheduler_address, mode="space",
                        store_entropies=False)
    assert len(digests(tmp_path / "fnapi")) > 5
    assert digests(tmp_path / "dask") == digests(tmp_path / "fnapi")
    assert counters["documents"] == base_counters["documents"] > 0


def test_dask_local_cluster_is_started_and_shut_down(corpus, tmp_path):
    """No address: a LocalCluster of --dask-workers processes for the run, closed after it."""
    job = PatchJob(inputs=[str(corpus)], output=str(tmp_path / "o"), mode="space", shard_bytes=3000)
    result, prepared = pipeline.run_job(job, runner="DaskRunner", dask_workers=1)
    assert result.client.status == "closed"
    assert pipeline.metric_totals(result, prepared)["files"] == len(prepared.pending) > 0


def _kill_a_busy_worker(client, out, killed):
    """SIGKILL the process of a worker that is processing a task, once documents are being read."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not killed:
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy and jobs.read_progress(out)["documents"] > 0:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)


def test_killed_worker_gives_identical_output(corpus, tiny_model, cluster, fnapi_entropy, tmp_path):
    """A worker SIGKILLed mid-run: the scheduler reruns its partitions and the output is unchanged."""
    base, _ = fnapi_entropy
    out = tmp_path / "killed"
    killed = []
    with distributed.Client(cluster.scheduler_address) as client:
        killer = threading.Thread(target=_kill_a_busy_worker, args=(client, out, killed))
        killer.start()
        run_dask(corpus, out, tiny_model, cluster.scheduler_address, batch_bytes=512)
        killer.join()
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test
    assert len(killed) == 1
    assert digests(out) == digests(base)


def test_cli_patch_on_dask_prints_the_counts(corpus, cluster, tmp_path):
    """`bltdata patch --runner DaskRunner` exits 0 (DaskRunner has no metrics()) and counts every document."""
    from click.testing import CliRunner

    from bltdata.cli.main import main

    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["patch", str(corpus), "-o", str(out), "--mode", "space", "--no-progress",
                                    "--runner", "DaskRunner", "--dask-address", cluster.scheduler_address])
    assert res.exit_code == 0, res.output
    documents = shards.read_manifest(out).totals["documents"]
    assert documents > 0
    assert f"this run          {documents:,} documents" in res.output


def test_killed_dask_job_is_resumed_identically(corpus, tiny_model, cluster, fnapi_entropy, tmp_path):
    """The whole job (its client process) SIGKILLed after the first finished file; a re-run completes it."""
    import subprocess
    import sys

    base, _ = fnapi_entropy
    out = tmp_path / "job"
    command = [sys.executable, "-m", "bltdata.pipelines.patch", str(corpus), "--output", str(out),
               "--model", tiny_model, "--store-entropies", "--batch-bytes", "512", "--shard-bytes", "3000",
               "--runner", "DaskRunner", "--dask-address", cluster.scheduler_address]
    client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / ".bltdata" / "done"
    deadline = time.monotonic() + 120
    while client.poll() is None and time.monotonic() < deadline and not any(done.glob("*.json")):
        time.sleep(0.02)
    client.kill()
    client.wait()
    assert not (out / "manifest.json").exists()
    job = PatchJob(inputs=[str(corpus)], output=str(out), model=tiny_model, **OPTIONS)
    result, prepared = pipeline.run_job(job, runner="DaskRunner", dask_address=cluster.scheduler_address)
    assert 1 <= len(prepared.pending) < len(prepared.files)
    assert digests(out) == digests(base)


def test_patch_on_a_local_cluster_prints_no_dask_log_lines(tmp_path):
    """distributed sets its loggers to INFO at import; the CLI still shows none of its lines without -v."""
    import json
    import subprocess
    import sys

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"hello {i}"}) + "\n" for i in range(3)))
    command = [sys.executable, "-c", "from bltdata.cli.main import main; main()", "patch", str(tmp_path / "docs.jsonl"),
               "-o", str(tmp_path / "out"), "--mode", "space", "--runner", "DaskRunner", "--dask-workers", "1",
               "--no-progress"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "3 documents" in run.stdout
    assert "distributed" not in run.stderr and "INFO" not in run.stderr, run.stderr
