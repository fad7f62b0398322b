"""Recommendations from a finished run: constrained beam search for a user or an ad-hoc history,
optionally with a scorer's top-K beside it.

    rec = Recommender("runs/beauty-onerec", scorer_run="runs/beauty-sasrec")
    rec.for_user("A2CUSR21CZQ6J7", k=10)                # a user id of the source files
    rec.for_history(titles=["Toy Story (1995)"], k=10)  # or item ids of the source files

Histories given by title are matched case-insensitively; an unknown or ambiguous title is a clear
error that lists close matches.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import gin
import numpy as np
import torch

from retrieval.batch import HistoryBatch
from retrieval.data.registry import load_split
from retrieval.errors import RecError
from retrieval.io import read_json
from retrieval.training import load_checkpoint
from rqvae.artifact import SemanticIds

BEST = "checkpoints/best"


@dataclass(frozen=True)
class Recommendation:
    rank: int
    item: int          # internal id 1..N
    raw_id: str        # id in the source files
    title: str
    score: float       # log-probability (generator) or score (scorer)


def _check_run(run_dir: Path, what: str) -> None:
    for f in ("config.gin", "results.json", BEST + ".json", BEST + ".safetensors"):
        if not (run_dir / f).is_file():
            raise RecError(f"{run_dir / f} not found; {run_dir} is not a finished {what} run "
                           "(point to the --run_dir of a completed training script)")


class Recommender:
    """Loads a OneRec run (and optionally a scorer run) on the same dataset split."""

    def __init__(self, onerec_run, scorer_run=None):
        import onerec.pipeline  # noqa: F401  (registers every configurable a OneRec run binds)
        import retrieval.data  # noqa: F401  (registers dataset sources)
        from onerec.generators import make_generator

        self.onerec_run = Path(onerec_run)
        _check_run(self.onerec_run, "scripts/train_onerec.py")
        files = [str(self.onerec_run / "config.gin")]
        if scorer_run is not None:
            self.scorer_run = Path(scorer_run)
            _check_run(self.scorer_run, "scripts/train_sasrec.py")
            files.append(str(self.scorer_run / "config.gin"))
            # Register every configurable a scorer run binds.
            import retrieval.losses  # noqa: F401
            import retrieval.models  # noqa: F401
            import retrieval.negatives  # noqa: F401
            import retrieval.samplers  # noqa: F401
            import retrieval.scorer_trainer  # noqa: F401
        gin.clear_config()
        try:
            gin.parse_config_files_and_bindings(files, [], finalize_config=False)
        except (ValueError, KeyError, TypeError, SyntaxError, IOError) as e:
            raise RecError(f"cannot read run config {files}: {' '.join(str(e).split())}") from None
        self.split = load_split()
        results = read_json(self.onerec_run / "results.json")
        entry = results.get("semantic_ids") if isinstance(results, dict) else None
        sid_dir = entry.get("dir") if isinstance(entry, dict) else None
        if not isinstance(sid_dir, str):
            raise RecError(f"{self.onerec_run / 'results.json'} does not name the semantic-ID run the "
                           "model was trained on (no semantic_ids.dir); it is not a complete "
                           "scripts/train_onerec.py run, re-run it")
        sid_dir = Path(sid_dir)
        sids = SemanticIds.load(sid_dir)
        sids.check_dataset(self.split.fingerprint, where=str(sid_dir))
        self.model = make_generator(sids)
        load_checkpoint(self.onerec_run / BEST, self.model, restore_rng=False)
        self.model.eval()
        self.scorer = None
        if scorer_run is not None:
            from retrieval.models.scorers import make_scorer
            fp = read_json(self.scorer_run / "results.json").get("dataset", {}).get("fingerprint")
            if fp != self.split.fingerprint:
                raise RecError(f"{self.scorer_run} was trained on another dataset split "
                               f"({fp} != {self.split.fingerprint}); use runs on the same data")
            self.scorer = make_scorer(num_items=self.split.num_items)     # SASRec, GRU4Rec, BERT4Rec
            load_checkpoint(self.scorer_run / BEST, self.scorer, restore_rng=False)
            self.scorer.eval()
        cat = self.split.catalogue
        self._raw_to_item = {str(r): i for i, r in enumerate(cat.raw_ids) if i > 0}
        self._user_row = {str(u): i for i, u in enumerate(self.split.user_raw_ids)}
        self._by_title: dict[str, list[int]] = {}
        for i in range(1, cat.num_items + 1):
            self._by_title.setdefault(str(cat.titles[i]).strip().lower(), []).append(i)

    # -- resolving inputs -------------------------------------------------------------------
    def item_for_title(self, title: str) -> int:
        key = title.strip().lower()
        hits = self._by_title.get(key, [])
        if len(hits) == 1:
            return hits[0]
        cat = self.split.catalogue
        if len(hits) > 1:
            ids = ", ".join(str(cat.raw_ids[i]) for i in hits[:10])
            raise RecError(f"title {title!r} is ambiguous ({len(hits)} items: ids {ids}); "
                           "give the item id instead")
        close = difflib.get_close_matches(key, list(self._by_title), n=5, cutoff=0.6)
        hint = ("; close matches: " + "; ".join(repr(str(cat.titles[self._by_title[c][0]]))
                                                 for c in close)) if close else ""
        raise RecError(f"no item titled {title!r} in {self.split.name}{hint}")

    def item_for_raw_id(self, raw_id) -> int:
        item = self._raw_to_item.get(str(raw_id).strip())
        if item is None:
            raise RecError(f"unknown item id {raw_id!r} in {self.split.name} (ids are those of the "
                           "source files, e.g. movieId or the S3Rec item number)")
        return item

    def user_history(self, user_raw_id) -> tuple[int, np.ndarray]:
        row = self._user_row.get(str(user_raw_id).strip())
        if row is None:
            raise RecError(f"unknown user id {user_raw_id!r} in {self.split.name}")
        off, items, _ = self.split.histories("test")
        hist = np.concatenate([items[off[row]:off[row + 1]], [self.split.test_item[row]]])
        return row, hist

    # -- recommending ---------------------------------------------------------------------------
    def _batch(self, row: int, history: np.ndarray) -> HistoryBatch:
        if len(history) == 0:
            raise RecError("the history is empty; give at least one item id or title")
        h = torch.from_numpy(np.asarray(history, dtype=np.int64))[None]
        return HistoryBatch(torch.tensor([row]), h, torch.zeros_like(h))

    def _rows(self, items: np.ndarray, scores: np.ndarray) -> list[Recommendation]:
        cat = self.split.catalogue
        return [Recommendation(r + 1, int(i), str(cat.raw_ids[i]), str(cat.titles[i]), float(s))
                for r, (i, s) in enumerate(zip(items, scores)) if i > 0]

    @torch.no_grad()
    def recommend(self, row: int, history: np.ndarray, k: int = 10) -> dict:
        if k < 1:
            raise RecError(f"k must be >= 1, got {k}")
        beam = max(k, self.model.beam_width)
        batch = self._batch(row, history)
        res = self.model.beam_search(batch, beam)
        out = {"generative": self._rows(res.items[0, :k].numpy(), res.scores[0, :k].numpy())}
        if self.scorer is not None:
            scores = self.scorer.score_all(batch)[0].float()
            scores[0] = -torch.inf
            if self.model.exclude_history:
                scores[torch.from_numpy(np.asarray(history, dtype=np.int64))] = -torch.inf
            top = torch.topk(scores, min(k, self.split.num_items))
            out["scorer"] = self._rows(top.indices.numpy(), top.values.numpy())
        return out

    def for_user(self, user_raw_id, k: int = 10) -> dict:
        row, hist = self.user_history(user_raw_id)
        return self.recommend(row, hist, k)

    def for_history(self, item_ids=(), titles=(), k: int = 10) -> dict:
        items = [self.item_for_raw_id(i) for i in item_ids] + [self.item_for_title(t) for t in titles]
        return self.recommend(0, np.asarray(items, dtype=np.int64), k)


def format_table(recs: dict) -> str:
    lines = []
    for name, rows in recs.items():
        lines.append(f"{name}:")
        lines.append(f"  {'rank':>4}  {'item id':<14} {'score':>9}  title")
        for r in rows:
            lines.append(f"  {r.rank:>4}  {r.raw_id:<14} {r.score:>9.3f}  {r.title}")
    return "\n".join(lines)
