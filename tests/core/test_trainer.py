"""The one training loop (retrieval.core.trainer) on a toy task: exact resume, guards, refusals,
and the shared settings every model family exposes under the same names."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from onerec.trainer import OneRecTrainer
from retrieval.baselines.cf_trainer import CFTrainer
from retrieval.core.checkpoints import load_best
from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors
from retrieval.core.trainer import StepOutput, Trainer, TrainingTask
from retrieval.scorers.trainer import ScorerTrainer


class ToyTask(TrainingTask):
    """Least squares on 64 fixed points; validation 'NDCG@10' = 1 / (1 + mean squared error)."""

    def __init__(self, nan_at_step: int | None = None, validate: bool = True):
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(64, 3, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]])
        self.num_users, self.calls, self.nan_at_step, self.has_validation = 10, 0, nan_at_step, validate

    def signature(self) -> dict:
        return {"model": "toy", "batch_size": 16}

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list:
        order = rng.permutation(len(self.x))
        return [order[s:s + 16] for s in range(0, len(order), 16)]

    def step(self, idx, runner) -> StepOutput:
        self.calls += 1
        loss = runner(lambda m, xb: ((m(xb) - self.y[idx]) ** 2).mean(), self.x[idx])
        if self.nan_at_step is not None and self.calls >= self.nan_at_step:
            loss = loss * float("nan")
        return StepOutput(loss, float(loss.detach()), len(idx))

    def validate(self, users: np.ndarray) -> dict | None:
        if not self.has_validation:
            return None
        with torch.no_grad():
            mse = float(((self.model.eval()(self.x) - self.y) ** 2).mean())
        self.model.train()
        return {"ndcg@10": 1.0 / (1.0 + mse), "hr@10": 0.0}


def _trainer(**kw) -> Trainer:
    return Trainer(**{"num_epochs": 6, "batch_size": 16, "lr": 0.01, "patience": 50, "progress": False,
                      "eval_every": 2, **kw})


def _records(run_dir):
    strip = ("targets_per_s", "train_seconds")
    return [{k: v for k, v in json.loads(x).items() if k not in strip}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_paused_run_resumes_to_the_uninterrupted_one(tmp_path):
    full = _trainer().run(ToyTask(), tmp_path / "a")
    assert _trainer().run(ToyTask(), tmp_path / "b", stop_after_epochs=3).finished is False
    resumed = _trainer().run(ToyTask(), tmp_path / "b", resume=True)
    assert (full.steps, full.best_step, full.best_valid) == (resumed.steps, resumed.best_step, resumed.best_valid)
    for name in ("last", "best"):
        a = load_tensors(tmp_path / f"a/checkpoints/{name}.safetensors")
        b = load_tensors(tmp_path / f"b/checkpoints/{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    kinds = [r["kind"] for r in _records(tmp_path / "a")]
    assert kinds.count("train") == 6 and kinds.count("eval") == 3          # every 2nd epoch


def test_max_steps_stops_inside_an_epoch_and_the_last_weights_are_validated(tmp_path):
    out = _trainer(max_steps=6, eval_every=10).run(ToyTask(), tmp_path / "run")
    assert (out.steps, out.stopped_by, out.epochs) == (6, "max_steps", 1.5)
    assert [r["step"] for r in _records(tmp_path / "run") if r["kind"] == "eval"] == [6]


def test_a_nan_loss_names_the_step_and_leaves_finite_checkpoints(tmp_path):
    with pytest.raises(RecError, match=r"training loss is nan at step 9 \(epoch 3, batch 0\)"):
        _trainer().run(ToyTask(nan_at_step=9), tmp_path / "run")
    state = json.loads((tmp_path / "run/checkpoints/last.json").read_text())["state"]
    assert state["step"] == 8
    weights = load_tensors(tmp_path / "run/checkpoints/last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_checkpoint_of_another_signature_or_a_second_start_is_refused(tmp_path):
    _trainer(num_epochs=1).run(ToyTask(), tmp_path / "run")
    with pytest.raises(RecError, match="already holds a checkpoint; pass --resume"):
        _trainer(num_epochs=1).run(ToyTask(), tmp_path / "run")
    other = ToyTask()
    other.signature = lambda: {"model": "toy", "batch_size": 32}
    with pytest.raises(RecError, match="checkpoint has batch_size = 16 but this config has 32"):
        _trainer(num_epochs=2).run(other, tmp_path / "run", resume=True)
    with pytest.raises(RecError, match="--resume given but .* does not exist"):
        _trainer().run(ToyTask(), tmp_path / "fresh", resume=True)


def test_without_validation_there_is_no_best_checkpoint_and_load_best_says_so(tmp_path):
    out = _trainer(num_epochs=2).run(ToyTask(validate=False), tmp_path / "run")
    assert out.steps == 8 and not (tmp_path / "run/checkpoints/best.json").exists()
    with pytest.raises(RecError, match="without a validation checkpoint"):
        load_best(tmp_path / "run", ToyTask().model, {"model": "toy", "batch_size": 16})


def test_bad_settings_are_one_line_errors():
    with pytest.raises(RecError, match="Trainer.schedule = 'linear' is unknown"):
        _trainer(schedule="linear")
    with pytest.raises(RecError, match="Trainer.grad_clip = -1"):
        _trainer(grad_clip=-1)


def test_every_family_takes_the_shared_settings_under_the_same_names():
    shared = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for family in (ScorerTrainer, OneRecTrainer, CFTrainer):
        own = set(inspect.signature(family.__init__).parameters) - {"self"}
        assert shared <= own, (family.__name__, sorted(shared - own))
    assert ScorerTrainer(eval_users=0).eval_users is None and OneRecTrainer(eval_users=0).eval_users is None
    assert ScorerTrainer(grad_clip=0).grad_clip is None and OneRecTrainer(grad_clip=None).grad_clip is None


def test_resuming_a_finished_run_trains_no_further_step(tmp_path):
    first = _trainer(max_steps=6, eval_every=10).run(ToyTask(), tmp_path / "run")
    before = load_tensors(tmp_path / "run/checkpoints/last.safetensors")
    again = _trainer(max_steps=6, eval_every=10).run(ToyTask(), tmp_path / "run", resume=True)
    assert (again.steps, again.stopped_by) == (first.steps, "max_steps") == (6, "max_steps")
    after = load_tensors(tmp_path / "run/checkpoints/last.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
