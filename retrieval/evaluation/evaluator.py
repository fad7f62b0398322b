"""The evaluator: full ranking (primary) and sampled-100 (secondary), for scorers and generators.

Both paths see the same split, the same histories and the same `exclude_history` rule: items in the
input history are removed from the candidates, except the target itself (a re-consumed target stays
rankable). Ties are pessimistic. Users are processed in batches; every step is a tensor op.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gin
import numpy as np
import torch
from tqdm.auto import tqdm

from retrieval.batch import history_batch
from retrieval.data.types import SplitData
from retrieval.evaluation.metrics import DEFAULT_KS, MISS, metrics_from_ranks
from retrieval.interfaces import Generator, Scorer

FULL = "full"
SAMPLED = "sampled-100"


@dataclass
class EvalResult:
    """Metrics of one stage ("valid"/"test") per protocol, plus per-user ranks for paired tests.

    metrics: {"full": {"ndcg@10": ...}, "sampled-100": {...}} (sampled only for scorers).
    ranks:   {"full": (U,) int64, ...} pessimistic 0-based ranks, MISS for a miss.
    users:   (U,) user rows evaluated, in the order of `ranks`.
    """

    stage: str
    metrics: dict
    ranks: dict
    users: np.ndarray
    exclude_history: bool
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"stage": self.stage, "exclude_history": self.exclude_history,
                "num_users": int(len(self.users)), **self.metrics, **self.info}


def _csr_rows(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch position, flat index) of every element of the CSR rows `rows`, vectorised."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    pos = np.repeat(np.arange(len(rows)), lengths)
    flat = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + \
        np.repeat(starts, lengths)
    return pos, flat


def sample_negatives(split: SplitData, users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(len(users), n) items drawn uniformly (with replacement) from items the user never touched.

    "Touched" = training sequence, validation and test items. Rejection sampling, vectorised.
    """
    N = split.num_items
    rng = np.random.default_rng(seed)
    pos, flat = _csr_rows(split.train_offsets, np.arange(split.num_users))
    keys = np.concatenate([pos * (N + 1) + split.train_items[flat],
                           np.arange(split.num_users) * (N + 1) + split.valid_item,
                           np.arange(split.num_users) * (N + 1) + split.test_item])
    keys = np.unique(keys)
    out = rng.integers(1, N + 1, size=(len(users), n))
    for _ in range(1000):
        k = users[:, None] * (N + 1) + out
        idx = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        bad = keys[idx] == k
        if not bad.any():
            return out
        out[bad] = rng.integers(1, N + 1, size=int(bad.sum()))
    raise RuntimeError("could not sample negatives: some user has interacted with every item")


@gin.configurable
class Evaluator:
    """Evaluate a Scorer or a Generator on one split stage.

    ks: cut-offs. exclude_history: drop input-history items (not the target) from candidates.
    sampled: also compute the sampled-100 protocol for scorers. num_generated: how many items a
    generator is asked for (its beam width); must be >= max(ks).
    """

    def __init__(self, ks=DEFAULT_KS, exclude_history: bool = True, batch_size: int = 512,
                 max_history: int = 200, sampled: bool = True, num_sampled: int = 100,
                 sample_seed: int = 12345, num_generated: int = 50, device: str | None = None,
                 progress: bool = True):
        from retrieval.errors import RecError

        self.ks = tuple(int(k) for k in ks)
        if num_generated < max(self.ks):
            raise RecError(f"Evaluator.num_generated={num_generated} is smaller than the largest "
                           f"cut-off K={max(self.ks)}; set num_generated >= {max(self.ks)}")
        self.exclude_history = exclude_history
        self.batch_size = batch_size
        self.max_history = max_history
        self.sampled = sampled
        self.num_sampled = num_sampled
        self.sample_seed = sample_seed
        self.num_generated = num_generated
        self.device = device
        self.progress = progress

    def _device(self, model) -> torch.device:
        if self.device:
            return torch.device(self.device)
        if isinstance(model, torch.nn.Module):
            p = next(model.parameters(), None)
            if p is not None:
                return p.device
        return torch.device("cpu")

    @torch.no_grad()
    def evaluate(self, model, split: SplitData, stage: str, users: np.ndarray | None = None) -> EvalResult:
        is_scorer = isinstance(model, Scorer)
        if not is_scorer and not isinstance(model, Generator):
            raise TypeError(f"{type(model).__name__} implements neither score_all nor generate")
        was_training = isinstance(model, torch.nn.Module) and model.training
        if isinstance(model, torch.nn.Module):
            model.eval()
        device = self._device(model)
        offsets, items, times = split.histories(stage)
        targets_all = split.targets(stage)
        users = np.arange(split.num_users) if users is None else np.asarray(users, dtype=np.int64)
        do_sampled = is_scorer and self.sampled
        negs = sample_negatives(split, users, self.num_sampled, self.sample_seed) if do_sampled else None
        full_ranks = np.empty(len(users), dtype=np.int64)
        samp_ranks = np.empty(len(users), dtype=np.int64) if do_sampled else None
        it = range(0, len(users), self.batch_size)
        for s in tqdm(it, desc=f"eval {stage}", disable=not self.progress, leave=False):
            rows = users[s:s + self.batch_size]
            batch = history_batch(offsets, items, times, rows, self.max_history).to(device)
            target = torch.from_numpy(targets_all[rows]).to(device)
            hpos, hflat = _csr_rows(offsets, rows)
            hist_b = torch.from_numpy(hpos).to(device)
            hist_i = torch.from_numpy(items[hflat]).to(device)
            if is_scorer:
                scores = model.score_all(batch).float()                   # (B, N+1)
                ar = torch.arange(len(rows), device=device)
                t_score = scores[ar, target].clone()
                if do_sampled:
                    cand = scores.gather(1, torch.from_numpy(negs[s:s + len(rows)]).to(device))
                    r = (cand >= t_score[:, None]).sum(1)
                    samp_ranks[s:s + len(rows)] = torch.where(
                        torch.isnan(t_score), self.num_sampled, r).cpu().numpy()
                scores[:, 0] = -torch.inf
                if self.exclude_history:
                    scores[hist_b, hist_i] = -torch.inf
                scores[ar, target] = t_score
                r = (scores >= t_score[:, None]).sum(1) - 1               # pessimistic ties
                r = torch.where(torch.isnan(t_score), split.num_items - 1, r)
                full_ranks[s:s + len(rows)] = r.cpu().numpy()
            else:
                ranked = model.generate(batch, self.num_generated).to(device)   # (B, G)
                valid = ranked > 0
                if self.exclude_history:
                    in_hist = torch.zeros(len(rows), split.num_items + 1, dtype=torch.bool,
                                          device=device)
                    in_hist[hist_b, hist_i] = True
                    in_hist[torch.arange(len(rows), device=device), target] = False
                    valid &= ~in_hist.gather(1, ranked.clamp(min=0))
                hit = (ranked == target[:, None]) & valid
                before = torch.cumsum(valid.long(), 1) - 1                 # rank among valid items
                r = torch.where(hit.any(1), before.gather(1, hit.long().argmax(1, keepdim=True))[:, 0],
                                torch.full_like(target, MISS))
                full_ranks[s:s + len(rows)] = r.cpu().numpy()
        if was_training:
            model.train()
        metrics = {FULL: metrics_from_ranks(full_ranks, self.ks)}
        ranks = {FULL: full_ranks}
        if do_sampled:
            metrics[SAMPLED] = metrics_from_ranks(samp_ranks, self.ks)
            ranks[SAMPLED] = samp_ranks
        return EvalResult(stage, metrics, ranks, users, self.exclude_history)
