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
