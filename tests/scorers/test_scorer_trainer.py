"""The shared scorer training loop: batches, crash-safe resume, refusing foreign checkpoints, NaN
handling, and the script's user errors (exit 2, one stderr line)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors, read_json
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers import SequentialScorer
from retrieval.negatives.base import UniformNegativeSampler
from retrieval.data.batch import right_aligned
from retrieval.scorers.sequences import TrainingSequences
from retrieval.scorers.trainer import ScorerTrainer
from retrieval.core.checkpoints import set_seed

from reliability_cases import user_error_line
from tiny_splits import synthetic_split

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"targets_per_s", "train_seconds"}


def _split(seed=0, users=150, items=80):
    return synthetic_split(users, items, k=2, mean_length=12.0, seed=seed)


def _fit(run_dir, split, use_time=True, use_mhc=True, loss=None, resume=False, stop_after=None,
         num_epochs=3):
    set_seed(0)
    model = SequentialScorer(num_items=split.num_items, maxlen=12, hidden=16, num_blocks=1,
                             num_heads=1, dropout=0.2, use_time=use_time, use_mhc=use_mhc)
    trainer = ScorerTrainer(num_epochs=num_epochs, batch_size=32, eval_every=1, patience=5,
                            progress=False, bucket_batches=2)
    return trainer.fit(model, split, loss or ScorerLoss("bce"), UniformNegativeSampler(split, seed=0),
                       run_dir, resume=resume, stop_after_epochs=stop_after)


def test_training_windows_are_input_seq_minus_last_and_targets_shifted():
    values = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    starts, ends = np.array([0, 5]), np.array([5, 9])                  # sequences 1..5 and 6..9
    assert right_aligned(values, starts, ends - 1, 3).tolist() == [[2, 3, 4], [6, 7, 8]]
    split = _split()
    data = TrainingSequences(split, maxlen=5)
    b = data.batch(np.arange(len(data)))
    u = int(b.users[0])
    seq = split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]]
    inp, tgt = b.items[0][b.items[0] > 0], b.targets[0][b.targets[0] > 0]
    assert inp.tolist() == seq[:-1][-5:].tolist() and tgt.tolist() == seq[1:][-5:].tolist()
    assert ((b.items > 0) == (b.targets > 0)).all()


def test_length_bucketing_covers_every_example_once():
    split = _split()
    data = TrainingSequences(split, maxlen=12)
    batches = data.batches(np.random.default_rng(0), 16, bucket_batches=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(data)))


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    split = _split()
    full = _fit(tmp_path / "a", split)
    assert _fit(tmp_path / "b", split, stop_after=2) is None                 # "crash" after epoch 2
    assert read_json(tmp_path / "b/checkpoints/last.json")["state"]["epoch"] == 2
    resumed = _fit(tmp_path / "b", split, resume=True)

    ta = load_tensors(tmp_path / "a/checkpoints/last.safetensors")
    tb = load_tensors(tmp_path / "b/checkpoints/last.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in TIMING}  # noqa: E731
                       for line in p.read_text().splitlines()]
    assert strip(tmp_path / "a/metrics.jsonl") == strip(tmp_path / "b/metrics.jsonl")
    assert [r["kind"] for r in strip(tmp_path / "a/metrics.jsonl")] == ["train", "eval"] * 3
    assert full["valid"].metrics == resumed["valid"].metrics and full["test"].metrics == resumed["test"].metrics
    assert full["valid"].metrics["full"]["ndcg@10"] > 0


def test_checkpoint_of_another_variant_or_dataset_is_refused(tmp_path):
    split = _split()
    _fit(tmp_path / "run", split, use_time=False, use_mhc=False, num_epochs=1)
    with pytest.raises(RecError, match="variant = sasrec but this config has tisasrec-mhc"):
        _fit(tmp_path / "run", split, use_time=True, use_mhc=True, resume=True)
    with pytest.raises(RecError, match="dataset"):
        _fit(tmp_path / "run", _split(seed=1), use_time=False, use_mhc=False, resume=True)
    with pytest.raises(RecError, match="--resume"):
        _fit(tmp_path / "run", split, use_time=False, use_mhc=False)


class _NaNAfter(ScorerLoss):
    def __init__(self, k):
        super().__init__("bce")
        self.k, self.calls = k, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        out = super().__call__(*args, **kwargs)
        return out * float("nan") if self.calls > self.k else out


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    split = _split()
    per_epoch = -(-len(TrainingSequences(split, 12)) // 32)
    with pytest.raises(RecError, match=rf"at step {per_epoch + 2} \(epoch 2, batch 1\)"):
        _fit(tmp_path / "run", split, loss=_NaNAfter(per_epoch + 1))
    meta = read_json(tmp_path / "run/checkpoints/last.json")
    assert meta["state"]["epoch"] == 1
    tensors = load_tensors(tmp_path / "run/checkpoints/last.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert kinds == ["train", "eval"]                                       # epoch 1 only


# ---------------------------------------------------------------- the script, as a user runs it
TINY = ["--gin_param", "SyntheticSource.num_users = 120", "--gin_param", "SyntheticSource.num_items = 60",
        "--gin_param", "ScorerTrainer.num_epochs = 2", "--gin_param", "ScorerTrainer.eval_every = 1",
        "--gin_param", "SequentialScorer.hidden = 16", "--gin_param", "ScorerTrainer.progress = False"]


def _script(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "scripts/train_sasrec.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_script_trains_writes_results_and_refuses_another_variants_checkpoint(tmp_path):
    run = tmp_path / "run"
    r = _script("--gin_file", "configs/synthetic/sasrec-bce.gin", *TINY, "--run_dir", str(run))
    assert r.returncode == 0, r.stderr
    res = read_json(run / "results.json")
    assert set(res["valid"]) >= {"full", "sampled-100"} and set(res["test"]) >= {"full", "sampled-100"}
    assert res["protocol"]["primary"] == "full" and res["protocol"]["secondary"] == "sampled-100"
    assert res["model"] == "sasrec" and res["params"]["variant"] == "sasrec"
    assert res["params"]["num_parameters"] > 0
    assert res["dataset"]["name"] == "synthetic" and len(res["timing"]["epoch_seconds"]) == 2
    assert (run / "config.gin").is_file() and (run / "ranks.safetensors").is_file()

    r = _script("--gin_file", "configs/synthetic/tisasrec-bce.gin", *TINY, "--run_dir", str(run), "--resume")
    line = user_error_line(r)
    assert "variant = sasrec but this config has tisasrec;" in line
    assert (run / "checkpoints/last.json").is_file()                        # nothing was deleted


@pytest.mark.slow
@pytest.mark.parametrize("param,expected", [
    ("ScorerLoss.name = 'focal'", "unknown loss 'focal'"),
    ("SequentialScorer.maxlen = 0", "SequentialScorer.maxlen = 0 must be > 0"),
])
def test_script_bad_config_is_one_line_and_exit_2(tmp_path, param, expected):
    r = _script("--gin_file", "configs/synthetic/sasrec-bce.gin", *TINY, "--gin_param", param,
                "--run_dir", str(tmp_path / "run"))
    assert expected in user_error_line(r)
    assert not (tmp_path / "run").exists()


def test_resume_trains_on_with_the_new_learning_rate(tmp_path, capsys):
    """The scorer's own error advice is 'lower ScorerTrainer.lr, then --resume': the resumed
    optimizer must use the config's lr, not the one saved with its state."""
    split = _split()
    _fit(tmp_path / "run", split, stop_after=1)
    set_seed(0)
    model = SequentialScorer(num_items=split.num_items, maxlen=12, hidden=16, num_blocks=1,
                             num_heads=1, dropout=0.2, use_time=True, use_mhc=True)
    trainer = ScorerTrainer(num_epochs=2, batch_size=32, eval_every=1, patience=5, progress=False,
                            bucket_batches=2, lr=1e-4)
    seen = []
    real = trainer.train_step
    trainer.train_step = lambda task, runner, optimizer, *a: (
        seen.append(optimizer.param_groups[0]["lr"]) or real(task, runner, optimizer, *a))
    trainer.fit(model, split, ScorerLoss("bce"), UniformNegativeSampler(split, seed=0),
                tmp_path / "run", resume=True)
    assert seen and set(seen) == {1e-4}                      # epoch 2 ran with the new lr
    assert "lr 0.001 -> 0.0001" in capsys.readouterr().out
