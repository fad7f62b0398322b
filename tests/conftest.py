import os
from pathlib import Path

import pytest

# Idle OpenMP threads sleep instead of spinning: several test subprocesses share 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private split/embedding cache so tests never see each other's files."""
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def shared_data() -> Path:
    from retrieval.data.registry import data_root
    return data_root()


@pytest.fixture
def data_root() -> Path:
    root = shared_data()
    if not root.is_dir():
        pytest.fail(f"shared datasets not found at {root}; set SEMID_DATA_ROOT")
    return root
