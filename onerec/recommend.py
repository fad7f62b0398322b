"""Recommendations from a finished OneRec run: constrained beam search for a user or an ad-hoc
history, optionally with other trained models' top-K beside it (`beside`: any RankerBeside, e.g. a
scorer run, retrieval.scorers.recommend.ScorerRun; retrieval.compare.recommend composes the two).

    rec = Recommender("runs/beauty-onerec")
    rec.for_user("A2CUSR21CZQ6J7", k=10)                # a user id of the source files
    rec.for_history(titles=["Toy Story (1995)"], k=10)  # or item ids of the source files

Histories given by title are matched case-insensitively; an unknown or ambiguous title is a clear
error that lists close matches.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import gin
import numpy as np
import torch

from retrieval.data.batch import HistoryBatch
from retrieval.data.registry import load_split
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.core.io import read_json
from retrieval.core.checkpoints import BEST, load_checkpoint
from rqvae.artifact import SemanticIds, load_code_names


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


class RankerBeside(Protocol):
    """Another finished run whose top-K is shown beside the generator's, under `name`.

    Its run_dir/config.gin is parsed together with the OneRec run's (its module registers the
    configurables that file binds); `load(split)` then builds it on the OneRec run's split, and
    `top_k(batch, exclude, k)` ranks all items for a one-row HistoryBatch, never item 0 nor the
    items of `exclude` (a 1-D tensor, or None), giving (items (k',), scores (k',)) numpy arrays."""

    name: str
    run_dir: Path
    trained_by: str                     # the script whose --run_dir it is, for error messages

    def load(self, split: SplitData) -> None: ...

    def top_k(self, batch: HistoryBatch, exclude: torch.Tensor | None, k: int
              ) -> tuple[np.ndarray, np.ndarray]: ...


class Recommender:
    """Loads a OneRec run (and the runs shown beside it) on the same dataset split."""

    def __init__(self, onerec_run, beside: Sequence[RankerBeside] = ()):
        import onerec.pipeline  # noqa: F401  (registers every configurable a OneRec run binds)
        import retrieval.data  # noqa: F401  (registers dataset sources)
        from onerec.generators import make_generator
        from onerec.item_trunk import ItemTrunk

        self.onerec_run = Path(onerec_run)
        self.beside = list(beside)
        _check_run(self.onerec_run, "scripts/train_onerec.py")
        files = [str(self.onerec_run / "config.gin")]
        for other in self.beside:
            _check_run(other.run_dir, other.trained_by)
            files.append(str(other.run_dir / "config.gin"))
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
        if self.split.new_items is not None and isinstance(self.model, ItemTrunk):
            self.model.set_new_items(self.split.new_items)
        self.sids, self.sid_dir, self._code_names = sids, sid_dir, None
        load_checkpoint(self.onerec_run / BEST, self.model, restore_rng=False)
        self.model.eval()
        for other in self.beside:
            other.load(self.split)
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
    def recommend(self, row: int, history: np.ndarray, k: int = 10, explain: bool = False,
                  attention_plot=None) -> dict:
        """{"generative": [Recommendation], <beside name>: [...]}; with `explain`, also
        "explanations": an onerec.explain.Explanation per generative row; `attention_plot`: a PNG
        of the trunk's attention over this history."""
        if k < 1:
            raise RecError(f"k must be >= 1, got {k}")
        beam = max(k, self.model.beam_width)
        batch = self._batch(row, history)
        res = self.model.beam_search(batch, beam)
        out = {"generative": self._rows(res.items[0, :k].numpy(), res.scores[0, :k].numpy())}
        exclude = (torch.from_numpy(np.asarray(history, dtype=np.int64)) if self.model.exclude_history
                   else None)
        for other in self.beside:
            out[other.name] = self._rows(*other.top_k(batch, exclude, k))
        if explain or attention_plot:
            from onerec import explain as why
            if self._code_names is None:
                self._code_names = load_code_names(self.sid_dir, self.sids.codes, self.split.catalogue)
            if explain:
                out["explanations"] = why.explain(self.model, self.sids.codes, self._code_names,
                                                  self.split.catalogue.raw_ids, history,
                                                  [r.item for r in out["generative"]])
            if attention_plot:
                cat = self.split.catalogue
                why.plot_attention(attention_plot, why.history_attention(self.model, history),
                                   [str(cat.titles[i]) or str(cat.raw_ids[i]) for i in history])
        return out

    def for_user(self, user_raw_id, k: int = 10, **explain) -> dict:
        row, hist = self.user_history(user_raw_id)
        return self.recommend(row, hist, k, **explain)

    def for_history(self, item_ids=(), titles=(), k: int = 10, **explain) -> dict:
        items = [self.item_for_raw_id(i) for i in item_ids] + [self.item_for_title(t) for t in titles]
        return self.recommend(0, np.asarray(items, dtype=np.int64), k, **explain)


def format_table(recs: dict) -> str:
    lines = []
    for name, rows in recs.items():
        if name == "explanations":
            continue
        lines.append(f"{name}:")
        lines.append(f"  {'rank':>4}  {'item id':<14} {'score':>9}  title")
        for r in rows:
            lines.append(f"  {r.rank:>4}  {r.raw_id:<14} {r.score:>9.3f}  {r.title}")
    return "\n".join(lines)


def format_explanations(recs: dict) -> str:
    """Why each generative row: p(item) as the product of its level probabilities, the names of
    its level-1 code and level-1/2 prefix, and the history items sharing them."""
    lines = ["why (generative):"]
    for r, e in zip(recs["generative"], recs["explanations"]):
        probs = " x ".join(f"{q:.3g}" for q in e.level_probs[:3])
        more = f" x ... ({len(e.level_probs)} levels)" if len(e.level_probs) > 3 else ""
        lines.append(f"  {r.rank:>4}  {r.raw_id:<14} p={e.probability:.4g} = {probs}{more}  {r.title}")
        lines.append(f"        semantic ID {'-'.join(map(str, e.codes))}")
        lines.append(f"        level 1: code {e.codes[0]} \"{e.names[0]}\" p={e.level_probs[0]:.3g}"
                     + (f"; level 2: prefix \"{e.names[1]}\" p={e.level_probs[1]:.3g}"
                        if len(e.level_probs) > 1 else ""))
        lines.append(f"        history sharing level 1: {', '.join(e.shares_level1) or '-'}; "
                     f"level 1-2: {', '.join(e.shares_level2) or '-'}")
    return "\n".join(lines)
