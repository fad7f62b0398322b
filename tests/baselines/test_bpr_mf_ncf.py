"""The user-ID baselines BPR-MF and NCF (NeuMF) with their trainer: they learn on small synthetic data
(clearly above popularity), score all items exactly as pair by pair, train on the distinct training
pairs only, resume exactly, write the one results schema (as popularity / co-occurrence do) through
scripts/train_cf.py, run in a comparison once per seed, and refuse bad config values in one line."""
import json
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest
import torch

from retrieval.data.batch import HistoryBatch
from retrieval.baselines.cf_trainer import CFTrainer, InteractionPairs
from retrieval.core.cli import error_line
from retrieval.compare.comparison import Comparison
from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors
from retrieval.baselines.collaborative import BPRMF, NeuMF
from retrieval.negatives.base import UniformNegativeSampler
from retrieval.core.checkpoints import set_seed

from baseline_helpers import SMALL_DATA, assert_results_schema, popularity_ndcg, small_split
from reliability_cases import user_error_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split():
    return small_split()


def _fit(model, split, run_dir, loss, negatives, epochs=12, lr=0.01, stop_after=None, resume=False):
    trainer = CFTrainer(num_epochs=epochs, batch_size=256, lr=lr, loss=loss, num_negatives=negatives,
                        eval_every=epochs, patience=1, progress=False, num_threads=1)
    return trainer.fit(model, split, UniformNegativeSampler(split, seed=0), run_dir, resume=resume,
                       stop_after_epochs=stop_after)


@pytest.mark.parametrize("kind", ["bpr-mf", "ncf"])
def test_each_learns_well_above_popularity(kind, split, tmp_path):
    set_seed(0)
    if kind == "bpr-mf":
        res = _fit(BPRMF(split.num_users, split.num_items, dim=32), split, tmp_path, "bpr", 1)
    else:
        res = _fit(NeuMF(split.num_users, split.num_items, mf_dim=16, mlp_dims=(32, 16, 8)), split,
                   tmp_path, "bce", 4)
    pop = popularity_ndcg(split)
    got = res["test"].metrics["full"]["ndcg@10"]
    assert got > 3 * pop and got > pop + 0.15, (got, pop)
    assert res["test"].metrics["full"]["auc"] > 0.75


@pytest.mark.parametrize("model", [lambda: BPRMF(7, 40, dim=8),
                                   lambda: NeuMF(7, 40, mf_dim=4, mlp_dims=(8, 6, 3), score_chunk=3)])
def test_scoring_all_items_equals_scoring_pairs(model):
    torch.manual_seed(0)
    m = model()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()                                                  # not the small init
        users = torch.arange(7)
        empty = torch.zeros(7, 1, dtype=torch.long)
        batch = HistoryBatch(users, empty, empty)
        every = torch.arange(41).expand(7, -1)
        assert torch.allclose(m.score_all(batch), m.pair_scores(users, every), atol=1e-5)


def test_a_user_row_outside_the_table_is_a_clear_error():
    empty = torch.zeros(1, 1, dtype=torch.long)
    batch = HistoryBatch(torch.tensor([7]), empty, empty)
    with pytest.raises(RecError, match="user row 7 is outside the 7 users"):
        BPRMF(7, 40).score_all(batch)


def test_training_pairs_are_the_distinct_training_interactions(split):
    pairs = InteractionPairs(split)
    keys = pairs.users * (split.num_items + 1) + pairs.items
    assert len(np.unique(keys)) == len(keys)
    users = np.repeat(np.arange(split.num_users), split.train_lengths)
    assert set(keys.tolist()) == set((users * (split.num_items + 1) + split.train_items).tolist())


def test_training_resumes_exactly(split, tmp_path):
    def make():
        set_seed(0)
        return NeuMF(split.num_users, split.num_items, mf_dim=8, mlp_dims=(16, 8))

    full = _fit(make(), split, tmp_path / "a", "bce", 2, epochs=3)
    assert _fit(make(), split, tmp_path / "b", "bce", 2, epochs=3, stop_after=2) is None
    resumed = _fit(make(), split, tmp_path / "b", "bce", 2, epochs=3, resume=True)
    ta = load_tensors(tmp_path / "a/checkpoints/last.safetensors")
    tb = load_tensors(tmp_path / "b/checkpoints/last.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)                    # same order, same negatives
    assert full["test"].metrics == resumed["test"].metrics


def _script(run_dir, config, *params):
    args = [a for p in [*SMALL_DATA, "CFTrainer.num_epochs=2", "CFTrainer.progress=False",
                        "CFTrainer.num_threads=1", *params] for a in ("--gin_param", p)]
    return subprocess.run([sys.executable, "scripts/train_cf.py", "--gin_file", config, *args,
                           "--run_dir", str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_script_writes_the_same_schema_as_every_other_model(tmp_path, monkeypatch):
    proc = _script(tmp_path / "ncf", "configs/synthetic/ncf.gin")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "ncf/results.json").read_text())
    assert_results_schema(record)
    assert record["model"] == "ncf" and record["params"]["num_parameters"] > 0
    ranks = load_tensors(tmp_path / "ncf/ranks.safetensors")
    assert ranks["ncf/test/full"].shape == ranks["ncf/test/candidates/full"].shape
    assert "ncf    test   full" in proc.stdout and "gauc" in proc.stdout     # the printed table

    # the training-free baselines' results.json satisfies the same schema
    from retrieval.baselines.counting import evaluate_baseline
    from retrieval.core.cli import parse_gin
    monkeypatch.chdir(ROOT)
    parse_gin(["configs/synthetic/baseline.gin"], SMALL_DATA)
    try:
        assert_results_schema(evaluate_baseline(tmp_path / "pop", model="popularity"))
    finally:
        gin.clear_config()


@pytest.mark.slow
@pytest.mark.parametrize("param, message", [
    ("make_cf_model.kind='svd'", "make_cf_model.kind = 'svd' is unknown; use one of bpr-mf, ncf"),
    ("NeuMF.mlp_dims=(63, 8)", "NeuMF.mlp_dims[0] = 63 must be even"),
])
def test_bad_config_values_are_one_line_errors_of_the_script(param, message, tmp_path):
    proc = _script(tmp_path / "run", "configs/synthetic/ncf.gin", param)
    assert message in user_error_line(proc)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make, message", [
    (lambda: CFTrainer(loss="hinge"), "CFTrainer.loss = 'hinge' is unknown; use one of bpr, bce"),
    (lambda: CFTrainer(lr=0), "CFTrainer.lr = 0 must be > 0"),
    (lambda: CFTrainer(num_negatives=0), "CFTrainer.num_negatives = 0 must be >= 1"),
    (lambda: CFTrainer(l2=-1.0), "CFTrainer.l2 = -1.0 must be a number >= 0"),
    (lambda: BPRMF(10, 10, dim="64"), "BPRMF.dim = '64' must be an integer"),
    (lambda: NeuMF(10, 10, mlp_dims=(8,)), "NeuMF.mlp_dims = (8,) must list at least two"),
])
def test_bad_values_raise_rec_errors_that_scripts_print_as_one_line(make, message):
    with pytest.raises(RecError) as err:
        make()
    line, code = error_line(err.value)
    assert code == 2 and message in line and "\n" not in line


def test_a_comparison_runs_each_cf_model_once_per_seed(monkeypatch):
    monkeypatch.chdir(ROOT)                               # the plan checks the gin files exist
    comp = Comparison(data_gin="configs/synthetic/data.gin", seeds=(0, 1),
                      cf_models={"bpr-mf": ["configs/synthetic/bpr-mf.gin"]},
                      scorers={"gru4rec": ["configs/synthetic/gru4rec.gin"]},
                      kind_params={"cf": ["CFTrainer.num_epochs=2"]})
    specs = [s for s in comp.plan() if s.kind == "cf"]
    assert [s.seed for s in specs] == [0, 1]
    cmd = specs[1].command(Path("/r"))
    assert cmd[1].endswith("scripts/train_cf.py") and cmd[-2:] == ["--run_dir", "/r/runs/bpr-mf/seed1"]
    assert "CFTrainer.num_epochs=2" in cmd and "CFTrainer.seed=1" in cmd
