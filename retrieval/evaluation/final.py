"""The final numbers of a trained model: valid and test of its validation-selected checkpoint on
every user (docs/protocol.md §3), with what the training run did."""
from __future__ import annotations

import time

from retrieval.core import distributed
from retrieval.core.trainer import SELECT_METRIC, FitSummary, Trainer
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
