"""The final numbers of a trained model: valid and test of its validation-selected checkpoint on
every user (docs/protocol.md §3), with what the training run did."""
from __future__ import annotations

import time

from pathlib import Path

from retrieval.core import distributed
from retrieval.core.checkpoints import load_best
from retrieval.core.trainer import SELECT_METRIC, FitSummary, Trainer, TrainingTask
from retrieval.data.types import SplitData
from retrieval.evaluation.evaluator import Evaluator


def final_results(model, split: SplitData, best_state: dict, summary: FitSummary,
                  trainer: Trainer) -> dict:
    """Valid and test of the loaded best checkpoint on every user, with what the run did."""
    final_eval = Evaluator(progress=trainer.progress and distributed.is_main())
    t1 = time.perf_counter()
    valid = final_eval.evaluate(model, split, "valid")
    test = final_eval.evaluate(model, split, "test")
    return {
        "valid": valid, "test": test,
        "protocol": {"primary": "full", "secondary": "sampled-100", "split": "leave-one-out",
                     "selection": f"best validation full {SELECT_METRIC}; test computed once for that "
                                  "checkpoint", **final_eval.protocol()},
        "training": {**summary.training(), "best_epoch": best_state["epoch"],
                     "settings": trainer.describe()},
        "timing": {**summary.timing(), "final_eval_seconds": time.perf_counter() - t1,
                   "device": str(trainer.device)},
    }


def train_and_evaluate(trainer: Trainer, task: TrainingTask, run_dir: Path, resume: bool = False,
                       stop_after_epochs: int | None = None) -> dict | None:
    """Train task.model with early stopping, then evaluate its best checkpoint on valid and test
    (final_results); None when `stop_after_epochs` ended this call first (resume to go on)."""
    summary = trainer.run(task, run_dir, resume=resume, stop_after_epochs=stop_after_epochs)
    if not summary.finished:
        return None
    best_state = load_best(run_dir, task.model, task.signature())
    return final_results(task.model, task.split, best_state, summary, trainer)
