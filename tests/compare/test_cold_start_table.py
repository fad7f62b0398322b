"""The cold-start table (retrieval.compare.cold_start): subgroup metrics from a run's ranks, and the
whole chain on tiny synthetic data — cold split, stage 1 encoding the new items, a generator trained
without them, re-evaluated at ε = 0 (never a new item) from a copy of the finished run."""
from __future__ import annotations

import shutil

import gin
import numpy as np
import pytest

from retrieval.compare.cold_start import cold_start_rows, cold_start_table, subgroup_metrics
from retrieval.data.cold_start import hold_out_new_items
from retrieval.evaluation import Evaluator
from retrieval.evaluation.metrics import metrics_from_ranks
from retrieval.evaluation.report import results_json, save_ranks, write_results

from fake_models import TableScorer
from reliability_cases import ONEREC_TINY, SCORER_TINY, SID_TINY, SYN, gin_args, run_script
from tiny_splits import synthetic_split


def test_subgroup_metrics_are_the_metrics_of_each_group_of_test_users(tmp_path):
    split = hold_out_new_items(synthetic_split(num_users=150, num_items=80, k=2, mean_length=12.0), 0.1)
    scores = np.random.default_rng(0).normal(size=(split.num_users, split.num_items + 1))
    ev = Evaluator(sampled=False, progress=False)
    res = {"table": {st: ev.evaluate(TableScorer(scores), split, st) for st in ("valid", "test")}}
    write_results(tmp_path, results_json(res, ev.protocol(), split))
    save_ranks(tmp_path / "ranks.safetensors", res)
    sub = subgroup_metrics(tmp_path, "table", split)
    new = split.new_items[split.test_item]
    assert sub["users"] == {"new": int(new.sum()), "other": int((~new).sum())} and new.any()
    ranks = res["table"]["test"].ranks["full"]
    for name, rows in (("new", new), ("other", ~new)):
        want = metrics_from_ranks(ranks[rows], ks=(5, 10, 20), full_mrr=False)
        assert sub[name] == {k: want[k] for k in sub[name]}
    rows = cold_start_rows({"random": [(tmp_path, "table"), (tmp_path, "table")]}, split)
    assert rows["random"]["new"]["hr@10"] == [sub["new"]["hr@10"], 0.0, 2]      # two equal seeds
    table = cold_start_table(rows, {"random": "a note"})
    assert table.count("| random (a note) |") == 2 and "Recall@10" in table


@pytest.mark.slow
def test_the_cold_start_chain_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    cold = ["load_split.new_items=0.1"]
    sid = tmp_path / "sid"
    proc = run_script("train_rqvae.py", ["--gin_file", "configs/synthetic/rqkmeans.gin",
                                         *gin_args(SYN + SID_TINY + cold), "--run_dir", str(sid)], cache)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "onerec"
    args = ["--gin_file", "configs/synthetic/onerec.gin",
            *gin_args(SYN + ONEREC_TINY + cold + [f"train_onerec.semantic_ids_dir='{sid}'"])]
    proc = run_script("train_onerec.py", args + ["--run_dir", str(run)], cache)
    assert proc.returncode == 0, proc.stderr
    eps0 = tmp_path / "onerec-eps0"
    shutil.copytree(run, eps0)
    proc = run_script("train_onerec.py", args + gin_args(["ParallelSidGenerator.new_item_share=0.0"])
                      + ["--run_dir", str(eps0), "--resume"], cache)
    assert proc.returncode == 0, proc.stderr
    gin.clear_config()
    gin.parse_config([p.replace("=", " = ", 1) for p in SYN + cold] + ["load_split.name = 'synthetic'"])
    try:
        from retrieval.data.registry import load_split
        split = load_split()
    finally:
        gin.clear_config()
    free, capped = subgroup_metrics(run, "onerec", split), subgroup_metrics(eps0, "onerec", split)
    assert capped["new"]["hr@20"] == 0.0                   # ε = 0: no new item is ever returned
    assert capped["users"] == free["users"] and capped["users"]["new"] > 0



def _gin_list(params: list[str]) -> str:
    return "[" + ", ".join(repr(p) for p in params) + "]"


@pytest.mark.slow
def test_the_cold_start_study_script(tmp_path):
    """scripts/cold_start.py on tiny data: every model of the comparison on the cold split, the
    generator re-evaluated at ε = 0 (no new item) and ε = 1 (= the run's own numbers), one table."""
    cold = ["load_split.new_items=0.1"]
    cfg = tmp_path / "cold.gin"
    cfg.write_text("\n".join([
        "include 'configs/synthetic/data.gin'", "include 'configs/base/eval.gin'",
        *[p.replace("=", " = ", 1) for p in SYN + cold],
        "Comparison.data_gin = 'configs/synthetic/data.gin'",
        "Comparison.seeds = (0,)",
        "Comparison.semantic_ids = ['configs/synthetic/rqkmeans.gin']",
        "Comparison.generative = {'onerec': ['configs/synthetic/onerec.gin']}",
        "Comparison.scorers = {'sasrec': ['configs/synthetic/sasrec-bce.gin']}",
        "Comparison.baselines = ['configs/synthetic/baseline.gin']",
        f"Comparison.extra_params = {_gin_list(SYN + cold)}",
        "Comparison.kind_params = {"
        f"'semantic_ids': {_gin_list(SID_TINY)}, 'generative': {_gin_list(ONEREC_TINY)}, "
        f"'scorer': {_gin_list(SCORER_TINY)}, "
        "'baseline': [\"evaluate_baseline.model=['popularity', 'semantic_knn']\", "
        "\"item_embeddings.source='collaborative'\", 'item_embeddings.dim=8']}",
        "ColdStartStudy.epsilons = (0.0, 1.0)", ""]))
    out = tmp_path / "study"
    proc = run_script("cold_start.py", ["--gin_file", str(cfg), "--run_dir", str(out)], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    import json
    record = json.loads((out / "cold_start.json").read_text())
    rows = record["rows"]
    assert set(rows) == {"onerec", "onerec-eps0", "onerec-eps1", "sasrec", "popularity", "semantic_knn"}
    assert rows["onerec-eps0"]["new"]["hr@20"][0] == 0.0               # ε = 0: never a new item
    assert rows["onerec-eps1"] == rows["onerec"]                        # ε = 1 = the run's default
    assert all(r["users"] == rows["onerec"]["users"] for r in rows.values())
    assert rows["onerec"]["users"]["new"] > 0 and record["dataset"]["new_items"] > 0
    assert "no trained embedding" in record["notes"]["sasrec"]
    assert "| onerec-eps0 |" in (out / "cold_start.md").read_text()
    assert "onerec-eps0" in (out / "report.md").read_text()
    again = run_script("cold_start.py", ["--gin_file", str(cfg), "--run_dir", str(out)], tmp_path / "cache")
    assert again.returncode == 0 and ": running" not in again.stdout and again.stdout.count("reused") == 10
