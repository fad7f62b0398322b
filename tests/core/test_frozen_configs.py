"""Every frozen gin file under configs/ parses against the configurables the scripts register: a
renamed parameter or a typo in a binding fails here, not in a user's run."""
import importlib.util
from pathlib import Path

import gin
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.gin"))


@pytest.fixture(scope="module")
def registered():
    for script in ("train_rqvae", "train_onerec", "train_sasrec", "train_cf", "evaluate_baseline", "compare",
                   "recommend", "prepare_data", "cold_start"):
        spec = importlib.util.spec_from_file_location(f"_cfg_{script}", ROOT / "scripts" / f"{script}.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # registers configurables


def test_the_configs_are_found():
    assert len(CONFIGS) >= 80 and "configs/amazon-beauty/sasrec-bce-s3rec.gin" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_parses(path, registered, monkeypatch):
    monkeypatch.chdir(ROOT)                                   # gin includes are relative to the CWD
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([path], [], finalize_config=False)
    finally:
        gin.clear_config()


def test_a_misspelt_binding_is_caught(registered, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'configs/amazon-beauty/sasrec-bce.gin'\nSequentialScorer.hiden = 64\n")
    gin.clear_config()
    try:
        with pytest.raises(ValueError, match="hiden"):
            gin.parse_config_files_and_bindings([str(bad)], [], finalize_config=False)
    finally:
        gin.clear_config()
