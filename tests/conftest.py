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
