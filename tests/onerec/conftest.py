import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one intra-op thread, and far faster on a shared, oversubscribed
    CPU, where two OpenMP workers spin-wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
