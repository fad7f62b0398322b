"""Fixtures of every test package below (core, data, evaluation, negatives, scorers, baselines, rqvae,
onerec, compare, reliability).

pytest (the default "prepend" import mode; no __init__.py files, so test file names are unique
across the packages) puts this folder on sys.path: the shared modules beside it are importable from
every package. They are tiny_splits (hand-made and synthetic splits), baseline_helpers and
reliability_cases (tiny gin settings, running a script, its one-line user error). Tests that run a
script in a subprocess, or a whole pipeline, are marked `slow`; `-m "not slow"` is the inner loop.
"""
import os
from pathlib import Path

import pytest

# The shared modules assert too: let pytest explain their failures as it does the tests'.
pytest.register_assert_rewrite("baseline_helpers", "reliability_cases", "tiny_splits")

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
