"""GRU4Rec and BERT4Rec as scorers of the shared ScorerTrainer: they learn on small synthetic data
(clearly above popularity), GRU4Rec reads left-padded histories as if unpadded, BERT4Rec attends both
ways, trains on masked items and scores with a mask token after the history, resumes exactly, and
scripts/train_sasrec.py writes the one results schema for both; bad config values are one line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.data.batch import HistoryBatch
from retrieval.core.cli import error_line
from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers import make_scorer
from retrieval.scorers.bert4rec import BERT4Rec, ClozeSequences
from retrieval.scorers.gru4rec import GRU4Rec
from retrieval.negatives.base import UniformNegativeSampler
from retrieval.scorers.trainer import ScorerTrainer
from retrieval.core.checkpoints import set_seed

from baseline_helpers import SMALL_DATA, assert_results_schema, popularity_ndcg, small_split
from reliability_cases import user_error_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split():
    return small_split()


def _fit(model, split, run_dir, epochs, lr, batch_size=32, stop_after=None, resume=False):
    trainer = ScorerTrainer(num_epochs=epochs, batch_size=batch_size, lr=lr, betas=(0.9, 0.999),
                            eval_every=epochs, patience=1, progress=False, num_threads=1)
    return trainer.fit(model, split, ScorerLoss("ce"), UniformNegativeSampler(split, seed=0), run_dir,
                       resume=resume, stop_after_epochs=stop_after)


def test_gru4rec_learns_well_above_popularity(split, tmp_path):
    set_seed(0)
    model = GRU4Rec(num_items=split.num_items, maxlen=20, hidden=32, dropout=0.1)
    res = _fit(model, split, tmp_path, epochs=12, lr=0.01)
    pop = popularity_ndcg(split)
    got = res["test"].metrics["full"]["ndcg@10"]
    assert got > 3 * pop and got > pop + 0.15, (got, pop)
    assert res["test"].metrics["full"]["auc"] > 0.7


def test_bert4rec_learns_well_above_popularity(split, tmp_path):
    set_seed(0)
    model = BERT4Rec(num_items=split.num_items, maxlen=20, hidden=32, num_blocks=1, num_heads=2,
                     dropout=0.1, mask_prob=0.4)
    res = _fit(model, split, tmp_path, epochs=25, lr=0.005)
    pop = popularity_ndcg(split)
    got = res["test"].metrics["full"]["ndcg@10"]
    assert got > 3 * pop and got > pop + 0.1, (got, pop)


def test_gru4rec_reads_a_left_padded_history_as_the_history_alone():
    torch.manual_seed(0)
    model = GRU4Rec(num_items=20, maxlen=8, hidden=8, dropout=0.0).eval()
    hist = torch.tensor([[3, 7, 1]])
    padded = torch.tensor([[0, 0, 0, 3, 7, 1], [5, 6, 2, 9, 4, 8]])        # a longer row beside it
    with torch.no_grad():
        alone = model.encode(hist)                                        # (1, 3, d)
        both = model.encode(padded)                                       # (2, 6, d)
        direct, _ = model.gru(model.item_emb(hist))                       # the GRU on 3 steps
    assert torch.allclose(both[0, 3:], alone[0], atol=1e-6)
    assert torch.allclose(alone[0], direct[0], atol=1e-6)
    assert torch.all(both[0, :3] == 0)                                    # padding has no state


def test_bert4rec_attends_to_later_items_and_scores_after_a_mask_token():
    torch.manual_seed(0)
    model = BERT4Rec(num_items=30, maxlen=6, hidden=8, num_blocks=1, num_heads=2, dropout=0.0).eval()
    a, b = torch.tensor([[0, 4, 5, 6]]), torch.tensor([[0, 4, 5, 9]])
    with torch.no_grad():
        assert not torch.allclose(model.encode(a)[0, 0], model.encode(b)[0, 0])   # bidirectional
        batch = HistoryBatch(torch.tensor([0]), a, torch.zeros_like(a))
        scores = model.score_all(batch)
        h = model.encode(torch.tensor([[0, 4, 5, 6, model.mask_id]]))[:, -1]
    assert scores.shape == (1, 31)                                        # the mask is no candidate
    assert torch.allclose(scores, h @ model.item_emb.weight.T, atol=1e-6)


def test_cloze_rows_mask_round_rho_n_items_and_target_only_them(split):
    data = ClozeSequences(split, maxlen=10, mask_id=split.num_items + 1, mask_prob=0.3)
    data.batches(np.random.default_rng(0), 64, bucket_batches=0)
    idx = np.arange(len(data))
    b = data.batch(idx)
    n = np.minimum(data.ends - data.starts, 10)
    masked = b.items == split.num_items + 1
    assert (masked.sum(1) == np.maximum(1, np.rint(0.3 * n))).all()
    assert ((b.targets > 0) == masked).all()
    original = ClozeSequences(split, 10, split.num_items + 1, 0.3)
    full = np.where(masked, b.targets, b.items)                           # the unmasked rows
    s, e = data.starts[idx], data.ends[idx]
    assert all(full[r][full[r] > 0].tolist() == split.train_items[s[r]:e[r]][-10:].tolist()
               for r in range(len(idx)))
    assert data.num_positions == int(masked.sum()) and original.num_positions == data.num_positions
    last = ClozeSequences(split, 10, split.num_items + 1, 0.3, last_item_prob=0.999999)
    last.batches(np.random.default_rng(0), 64, bucket_batches=0)
    lb = last.batch(idx)
    assert ((lb.targets > 0).sum(1) == 1).all() and (lb.targets[:, -1] > 0).all()


def test_bert4rec_resumes_exactly(split, tmp_path):
    def make():
        set_seed(0)
        return BERT4Rec(num_items=split.num_items, maxlen=12, hidden=16, num_blocks=1, num_heads=2)

    full = _fit(make(), split, tmp_path / "a", epochs=3, lr=0.003, batch_size=64)
    assert _fit(make(), split, tmp_path / "b", epochs=3, lr=0.003, batch_size=64, stop_after=2) is None
    resumed = _fit(make(), split, tmp_path / "b", epochs=3, lr=0.003, batch_size=64, resume=True)
    ta = load_tensors(tmp_path / "a/checkpoints/last.safetensors")
    tb = load_tensors(tmp_path / "b/checkpoints/last.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)                     # the same masks were drawn
    assert full["test"].metrics == resumed["test"].metrics


def _train_script(run_dir, config, *params):
    args = [a for p in [*SMALL_DATA, "ScorerTrainer.num_epochs=2", "ScorerTrainer.eval_every=1",
                        "ScorerTrainer.progress=False", "ScorerTrainer.num_threads=1", *params]
            for a in ("--gin_param", p)]
    return subprocess.run([sys.executable, "scripts/train_sasrec.py", "--gin_file", config, *args,
                           "--run_dir", str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gru4rec", "bert4rec"])
def test_the_script_writes_the_one_results_schema(kind, tmp_path):
    proc = _train_script(tmp_path / "run", f"configs/synthetic/{kind}.gin")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "run/results.json").read_text())
    assert_results_schema(record)
    assert record["model"] == kind and record["params"]["variant"] == kind and record["params"]["loss"] == "ce"
    ranks = load_tensors(tmp_path / "run/ranks.safetensors")
    assert ranks[f"{kind}/test/candidates/full"].shape == ranks[f"{kind}/test/full"].shape


@pytest.mark.slow
def test_a_bad_config_value_is_a_one_line_error_of_the_script(tmp_path):
    proc = _train_script(tmp_path / "run", "configs/synthetic/gru4rec.gin", "make_scorer.kind='lstm'")
    line = user_error_line(proc)
    assert "make_scorer.kind = 'lstm' is unknown; use one of sasrec, gru4rec, bert4rec" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make, message", [
    (lambda: GRU4Rec(num_items=10, hidden=0), "GRU4Rec.hidden = 0 must be >= 1"),
    (lambda: GRU4Rec(num_items=10, hidden=2.5), "GRU4Rec.hidden = 2.5 must be an integer"),
    (lambda: GRU4Rec(num_items=10, dropout=1.0), "GRU4Rec.dropout = 1.0 must be a number in [0, 1)"),
    (lambda: BERT4Rec(num_items=10, mask_prob=1.5), "BERT4Rec.mask_prob = 1.5 must be a number in (0, 1)"),
    (lambda: BERT4Rec(num_items=10, mask_prob=0), "BERT4Rec.mask_prob = 0 must be a number in (0, 1)"),
    (lambda: BERT4Rec(num_items=10, num_heads=3), "not divisible by num_heads = 3"),
    (lambda: BERT4Rec(num_items=10, maxlen=1), "BERT4Rec.maxlen = 1 must be >= 2"),
])
def test_bad_values_raise_rec_errors_that_scripts_print_as_one_line(make, message):
    with pytest.raises(RecError) as err:
        make()
    line, code = error_line(err.value)                  # what cli.run prints (gin adds a 2nd line)
    assert code == 2 and message in line and "\n" not in line


def test_make_scorer_builds_each_kind():
    assert [type(make_scorer(num_items=10, kind=k)).__name__ for k in ("sasrec", "gru4rec", "bert4rec")] \
        == ["SequentialScorer", "GRU4Rec", "BERT4Rec"]
