"""Shared test settings."""
import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test: on a small shared machine OpenMP spin-waiting makes two
    threads far slower than one, and a single thread keeps float results reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def reading_fails(monkeypatch):
    """`with reading_fails("sub/b.jsonl.zst"):` the pipeline's reader raises OSError on that input
    (a worker dying mid-run); leaving the block restores the real reader."""
    from contextlib import contextmanager

    from bltdata.pipelines import patch as pipeline

    @contextmanager
    def arm(victim: str):
        real_read = pipeline.readers.read_records

        def failing(fileobj, source, fmt, **kw):
            if source == victim:
                raise OSError(f"injected failure while reading {victim}")
            return real_read(fileobj, source, fmt, **kw)

        monkeypatch.setattr(pipeline.readers, "read_records", failing)
        try:
            yield
        finally:
            monkeypatch.setattr(pipeline.readers, "read_records", real_read)

    return arm


@pytest.fixture
def fail_on_call(monkeypatch):
    """`calls = fail_on_call(module, "name", n, error)`: `module.name` works as before until its
    n-th call, which raises `error` (a run killed midway); `calls` grows by one per call."""

    def arm(module, name: str, n: int, error: BaseException) -> list:
        real, calls = getattr(module, name), []

        def wrapper(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise error
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)
        return calls

    return arm


@pytest.fixture
def all_files():
    """`all_files(directory)`: every file under it, temporaries and hidden ones included, as
    sorted relative paths (what a failed write left behind)."""

    def files(directory) -> list[str]:
        return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())

    return files


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A checkpoint of the tiny entropy model with fixed random weights (seed 0)."""
    import torch

    from bltdata.entropy.checkpoint import save_checkpoint
    from bltdata.entropy.model import EntropyModel, tiny

    torch.manual_seed(0)
    model = EntropyModel(tiny())
    model.reset_parameters(seed=0)
    return str(save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny", preset="tiny", name="tiny"))
