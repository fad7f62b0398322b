"""configs/ml-25m/compare.gin runs the whole comparison on files in ML-25M format.

The real ratings cannot be fetched here, so a small synthetic dataset is written in exactly the
ML-25M layout (ratings.csv + movies.csv under $SEMID_DATA_ROOT/movielens-25m) and the frozen
configs run on it unchanged except for sizes (Comparison.kind_params) and one seed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_cases import ONEREC_TINY, SCORER_TINY, SID_TINY, env

from retrieval.data.synthetic_csv import write_movielens_csv

pytestmark = pytest.mark.slow  # every test runs scripts/compare.py in a subprocess

REPO = Path(__file__).resolve().parents[2]


def test_ml25m_compare_config_runs_end_to_end_on_ml25m_format_files(tmp_path):
    data_root = tmp_path / "data"
    counts = write_movielens_csv(data_root / "movielens-25m", num_ratings=2400, num_users=120,
                                 num_items=80, seed=3)
    assert counts["ratings"] == 2400
    kind_params = {"semantic_ids": SID_TINY, "generative": ONEREC_TINY + ["OneRecTrainer.max_minutes=0"],
                   "scorer": SCORER_TINY + ["GRU4Rec.maxlen=10", "BERT4Rec.maxlen=10"],
                   "cf": ["CFTrainer.num_epochs=2", "CFTrainer.progress=False"]}
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "scripts/compare.py", "--gin_file", "configs/ml-25m/compare.gin",
         "--gin_param", "Comparison.seeds=(0,)", "--gin_param", f"Comparison.kind_params={kind_params!r}",
         "--gin_param", "Evaluator.progress=False", "--run_dir", str(out)],
        cwd=REPO, env={**env(tmp_path / "cache"), "SEMID_DATA_ROOT": str(data_root)},
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["dataset"]["name"] == "ml-25m"
    models = {"onerec", "sasrec-ce", "tisasrec-mhc-ce", "gru4rec", "bert4rec", "bpr-mf", "ncf"}
    assert set(record["test"]["full"]) == models | {"popularity", "cooccurrence"}
    # every run read the same split as the report
    for model in models:
        res = json.loads((out / "runs" / model / "seed0" / "results.json").read_text())
        assert res["dataset"]["fingerprint"] == record["dataset"]["fingerprint"]
    assert (out / "report.md").read_text().count("| onerec |") >= 2      # test + validation tables


def test_unknown_kind_in_kind_params_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/compare.py", "--gin_file", "configs/synthetic/compare.gin",
         "--gin_param", "Comparison.kind_params={'scorers': ['ScorerTrainer.num_epochs=1']}",
         "--run_dir", str(tmp_path / "r")],
        cwd=REPO, env=env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: Comparison.kind_params: unknown kind 'scorers'; use one of semantic_ids, generative, "
        "scorer, cf, baseline"]
    assert not (tmp_path / "r").exists()               # nothing ran: no empty run directory left
