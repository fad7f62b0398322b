"""Stage 2 end to end: split + semantic-ID artifact -> trained generator -> results.json.

`scripts/train_onerec.py` is a thin shell around `train_onerec`; every parameter comes from gin.
"""
from __future__ import annotations

import time
from pathlib import Path

import gin
import torch

from onerec.generators import generator_kind, make_generator
from onerec.item_trunk import ItemTrunk
from onerec.trainer import SELECT_METRIC, OneRecTask, OneRecTrainer
from retrieval.core import distributed
from retrieval.data.registry import load_split
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.evaluation.report import results_json, save_ranks, write_results
from retrieval.core.io import fingerprint
from retrieval.core.checkpoints import set_seed
from retrieval.core.checkpoints import load_best
from retrieval.core.trainer import subsample
from rqvae.artifact import META_FILE, SemanticIds


def load_semantic_ids(semantic_ids_dir: str, split) -> SemanticIds:
    """The stage-1 artifact, refused unless it was built for exactly this split."""
    where = Path(semantic_ids_dir)
    sids = SemanticIds.load(where)
    sids.check_dataset(split.fingerprint, where=str(where / META_FILE))
    if sids.num_items != split.num_items:
        raise RecError(f"{where / META_FILE}: artifact has {sids.num_items} items but dataset "
                       f"{split.name!r} has {split.num_items}; re-run scripts/train_rqvae.py on it")
    return sids


def collision_stats(sids: SemanticIds) -> dict:
    d = sids.codes[1:, -1]
    return {"items_with_d_gt_0": float((d > 0).mean()) if len(d) else 0.0,
            "largest_group": int(d.max()) + 1 if len(d) else 0}


@gin.configurable
def train_onerec(run_dir: Path, resume: bool = False, semantic_ids_dir: str | None = None,
                 final_users: int = 0) -> dict:
    """Train on the gin-selected dataset, select on validation, evaluate valid+test, write results.

    final_users: 0 = the final valid/test evaluation covers every user (the protocol); n > 0 = a
    fixed-seed subsample of n users (the trainer's eval seed), for CPU-bound smoke runs only. It is
    recorded in results.json ("protocol.final_users").
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if not semantic_ids_dir:
        raise RecError("train_onerec.semantic_ids_dir is not set; bind it to the --run_dir of a "
                       "finished scripts/train_rqvae.py run on the same dataset")
    split = load_split()
    sids = load_semantic_ids(semantic_ids_dir, split)
    evaluator = Evaluator()
    trainer = OneRecTrainer()
    set_seed(trainer.seed)                                 # model initialisation
    model = make_generator(sids)
    if split.new_items is not None and isinstance(model, ItemTrunk):   # cold start (protocol §2.7)
        model.set_new_items(split.new_items)
    cls = type(model).__name__
    if model.beam_width < max(evaluator.ks):
        raise RecError(f"{cls}.beam_width={model.beam_width} is smaller than the largest cut-off "
                       f"K={max(evaluator.ks)}; set {cls}.beam_width >= {max(evaluator.ks)}")
    if evaluator.num_generated > model.beam_width:
        raise RecError(f"Evaluator.num_generated={evaluator.num_generated} exceeds "
                       f"{cls}.beam_width={model.beam_width}; make them equal")
    task = OneRecTask(trainer, model, split, evaluator, sids.codes)
    summary = trainer.run(task, run_dir, resume=resume)
    load_best(run_dir, model, task.signature())           # the validation-selected weights
    final = evaluator                                      # all users this time
    timing = {"train_s": summary.train_seconds, **summary.timing()}
    evals = {}
    for stage in ("valid", "test"):
        t = time.perf_counter()
        users = subsample(split.num_users, final_users, trainer.eval_seed) if final_users else None
        evals[stage] = final.evaluate(model, split, stage, users=users)
        timing[f"eval_{stage}_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t0
    from retrieval.core.cli import env_info
    protocol = {**final.protocol(), "ranking": "full", "split": "leave-one-out",
                "exclude_history_in_beam": model.exclude_history, "beam_width": model.beam_width,
                "hit": "full semantic ID incl. disambiguation code (the item id)",
                "selection": f"valid {SELECT_METRIC} on {len(trainer.eval_subsample(split.num_users))} "
                             f"users (seed {trainer.eval_seed})",
                "final_users": (f"{final_users} (seed {trainer.eval_seed})" if final_users else "all")}
    if split.new_items is not None:
        protocol["cold_start"] = {"new_items": int(split.new_items.sum()),
                                  "new_item_share": getattr(model, "new_item_share", 1.0)}
    out = results_json({"onerec": evals}, protocol, split, extra={
        "semantic_ids": {"dir": str(semantic_ids_dir), "tokenizer": sids.tokenizer,
                         "levels": sids.levels, "codebook_size": sids.codebook_size,
                         "num_disambiguation": sids.num_disambiguation,
                         "fingerprint": fingerprint(sids.codes), **collision_stats(sids)},
        "params": {**model.describe(), "kind": generator_kind(model), "beam_width": model.beam_width},
        "training": {**summary.training(), "settings": trainer.describe()},
        "timing": {**timing, "final_eval_seconds": timing["eval_valid_s"] + timing["eval_test_s"]},
        "env": {**env_info(), "torch_threads": torch.get_num_threads()}})
    if distributed.is_main():
        write_results(run_dir, out)
        save_ranks(run_dir / "ranks.safetensors", {"onerec": evals})
    return out


def summary_line(out: dict) -> str:
    v, t = out["valid"]["full"], out["test"]["full"]
    return (f"onerec {out['dataset']['name']}: valid ndcg@10={v['ndcg@10']:.4f} hr@10={v['hr@10']:.4f} | "
            f"test ndcg@10={t['ndcg@10']:.4f} hr@10={t['hr@10']:.4f} "
            f"(best step {out['training']['best_step']}, {out['timing']['total_s']:.0f}s)")

