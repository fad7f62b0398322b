"""scripts/evaluate_baseline.py end to end on small synthetic data: results.json shape and values,
config.gin, per-user ranks; user errors give one line on stderr, exit 2 and no run directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

from retrieval.baselines.counting import ItemCooccurrence, MostPopular
from retrieval.core.cli import parse_gin
from retrieval.data import load_split
from retrieval.evaluation import Evaluator
from retrieval.core.io import load_tensors

from reliability_cases import user_error_line

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["SyntheticSource.num_users = 300", "SyntheticSource.num_items = 150"]


def run_script(run_dir, *extra, cache=None):
    env = {**os.environ, **({"SEMID_CACHE_DIR": str(cache)} if cache else {})}
    cmd = [sys.executable, "scripts/evaluate_baseline.py", "--gin_file", "configs/synthetic/baseline.gin",
           *(a for p in SMALL for a in ("--gin_param", p)), "--run_dir", str(run_dir), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "baselines"
    cache = tmp_path_factory.mktemp("cache")       # shared by the run and the direct evaluation
    proc = run_script(run_dir, cache=cache)
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc.stdout, cache


@pytest.mark.slow
def test_results_json_has_the_issue_shape(finished_run):
    run_dir, _, _ = finished_run
    r = json.loads((run_dir / "results.json").read_text())
    assert {"valid", "test", "protocol", "dataset", "models", "model"} <= set(r)
    assert list(r["models"]) == ["popularity", "cooccurrence"] and r["model"] == "popularity"
    assert r["valid"] == r["models"]["popularity"]["valid"]
    for stage in ("valid", "test"):
        sec = r["models"]["cooccurrence"][stage]
        assert sec["stage"] == stage and sec["exclude_history"] is True
        assert {"ndcg@10", "hr@10", "mrr@10", "mrr"} <= set(sec["full"])
        assert {"ndcg@10", "hr@10", "mrr@10"} <= set(sec["sampled-100"])
    assert r["protocol"]["exclude_history"] is True and r["protocol"]["ks"] == [5, 10, 20, 50]
    assert r["protocol"]["sampled"] == {"name": "sampled-100", "num_negatives": 100, "seed": 12345,
                                        "scorers_only": True}
    counts = r["dataset"]["counts"]
    assert r["dataset"]["name"] == "synthetic" and len(r["dataset"]["fingerprint"]) == 16
    assert counts["users"] == r["test"]["num_users"] and counts["items"] <= 150


@pytest.mark.slow
def test_numbers_equal_a_direct_evaluation(finished_run, monkeypatch):
    run_dir, _, cache = finished_run
    monkeypatch.setenv("SEMID_CACHE_DIR", str(cache))
    r = json.loads((run_dir / "results.json").read_text())
    gin.clear_config()
    gin.parse_config(["load_split.name = 'synthetic'", *SMALL])
    try:
        split = load_split()
    finally:
        gin.clear_config()
    assert split.fingerprint == r["dataset"]["fingerprint"]
    e = Evaluator(progress=False)
    for name, model in (("popularity", MostPopular()), ("cooccurrence", ItemCooccurrence())):
        got = e.evaluate(model.fit(split), split, "test")
        assert r["models"][name]["test"]["full"] == got.metrics["full"]
        assert r["models"][name]["test"]["sampled-100"] == got.metrics["sampled-100"]
        ranks = load_tensors(run_dir / "ranks.safetensors")
        assert np.array_equal(ranks[f"{name}/test/full"].numpy(), got.ranks["full"])


@pytest.mark.slow
def test_table_and_config_are_written(finished_run):
    run_dir, stdout, _ = finished_run
    assert "cooccurrence  test   sampled-100" in stdout
    cfg = (run_dir / "config.gin").read_text()
    assert "evaluate_baseline.model = ['popularity', 'cooccurrence']" in cfg
    assert "Evaluator.exclude_history = True" in cfg


@pytest.mark.slow
@pytest.mark.parametrize("param, message", [
    ("Evaluator.exclude_histroy = False", "exclude_histroy"),
    ("evaluate_baseline.model = 'pop'", "unknown baseline 'pop'"),
])
def test_user_errors_are_one_line_and_leave_nothing(tmp_path, param, message):
    run_dir = tmp_path / "run"
    proc = run_script(run_dir, "--gin_param", param)
    assert message in user_error_line(proc)
    assert not run_dir.exists()


@pytest.mark.parametrize("dataset", ["synthetic", "amazon-beauty", "ml-latest-small", "ml-100k", "ml-25m"])
def test_frozen_baseline_configs_parse_and_select_their_dataset(dataset, monkeypatch):
    monkeypatch.chdir(ROOT)                          # gin includes are relative to the repo root
    try:
        parse_gin([f"configs/{dataset}/baseline.gin"], [])
        assert gin.query_parameter("load_split.name") == dataset
        assert gin.query_parameter("evaluate_baseline.model") == ["popularity", "cooccurrence"]
        assert gin.query_parameter("Evaluator.exclude_history") is True
        assert gin.query_parameter("Evaluator.sample_seed") == 12345
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_saved_ranks_reload_for_a_paired_test(finished_run):
    from retrieval.evaluation.report import load_result
    from retrieval.evaluation.significance import paired_test

    run_dir, _, _ = finished_run
    pop, co = (load_result(run_dir, m, "test") for m in ("popularity", "cooccurrence"))
    r = json.loads((run_dir / "results.json").read_text())
    assert pop.metrics["full"] == r["models"]["popularity"]["test"]["full"]
    t = paired_test(co, pop, "ndcg@10")
    assert t.n == r["test"]["num_users"]
    assert t.mean_diff == pytest.approx(r["models"]["cooccurrence"]["test"]["full"]["ndcg@10"]
                                        - r["models"]["popularity"]["test"]["full"]["ndcg@10"], abs=1e-12)
