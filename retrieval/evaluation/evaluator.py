"""The evaluator: full ranking (primary) and sampled-100 (secondary), for scorers and generators.

Both paths see the same split, the same histories and the same `exclude_history` rule: items in the
input history (the whole history, not only the `max_history` items a model is shown) are removed
from the candidates, except the target itself (a re-consumed target stays rankable). Item 0
(padding) is never a candidate.

Ties are pessimistic: a scorer's rank is the number of other candidates whose score is *not below*
the target's, so equal scores count against the target, and so does NaN (a NaN is incomparable; a
NaN target therefore ranks last among the candidates). Users are processed in batches; every step
is an array op. Beside each rank the evaluator keeps the user's number of candidates (all N items
minus the excluded history, so it differs per user) and, for a generator, how many of them it
ranked: per-user AUC and GAUC (metrics.per_user_auc) need both. Memory is bounded by the user
batch: one (batch_size, N+1) score matrix at a time (512 x 60k float32 = 123 MB at ML-25M scale),
so no chunking over items is needed.

Under torchrun (retrieval.core.distributed) each rank ranks every W-th user and the per-user ranks are
gathered on all ranks, so metrics equal the single-process ones and every rank can act on them.
"""
from __future__ import annotations

import numbers
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import gin
import numpy as np
import torch
from tqdm.auto import tqdm

from retrieval.core import distributed
from retrieval.data.batch import history_batch
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.evaluation.metrics import DEFAULT_KS, MISS, metrics_from_ranks
from retrieval.evaluation.interfaces import Generator, Scorer

FULL = "full"
SAMPLED = "sampled-100"


@dataclass
class EvalResult:
    """Metrics of one stage ("valid"/"test") per protocol, plus per-user ranks for paired tests.

    metrics: {"full": {"ndcg@10": ..., "auc": ..., "gauc": ...}, "sampled-100": {...}} (sampled
             only for scorers).
    ranks:   {"full": (U,) int64, ...} pessimistic 0-based ranks, MISS for a miss.
    users:   (U,) user rows evaluated, in the order of `ranks`.
    candidates: {"full": (U,) int64, ...} each user's number of candidates, the target included.
    ranked:  {"full": (U,) int64, ...} how many of them the model ranked (= candidates for a
             scorer; a generator's valid returned items).
    """

    stage: str
    metrics: dict
    ranks: dict
    users: np.ndarray
    exclude_history: bool
    info: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    ranked: dict = field(default_factory=dict)

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
    """(len(users), n) items drawn uniformly from items the user never touched.

    "Touched" = training sequence, validation and test items, so the same negatives serve both
    stages. Drawn with replacement, as in the SASRec reference evaluation. Rejection sampling,
    vectorised; the result depends only on (split, users, n, seed).
    """
    N, U = split.num_items, split.num_users
    rng = np.random.default_rng(seed)
    pos, flat = _csr_rows(split.train_offsets, np.arange(U))
    keys = np.unique(np.concatenate([pos * (N + 1) + split.train_items[flat],
                                     np.arange(U) * (N + 1) + split.valid_item,
                                     np.arange(U) * (N + 1) + split.test_item]))
    touched = np.bincount(keys // (N + 1), minlength=U)
    full = np.flatnonzero(touched[users] >= N)
    if len(full):
        raise RecError(f"sampled-100: user row {int(users[full[0]])} has interacted with all {N} "
                       "items, so no negative can be drawn; set Evaluator.sampled = False")
    out = rng.integers(1, N + 1, size=(len(users), n))
    while True:
        k = users[:, None] * (N + 1) + out
        idx = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        bad = keys[idx] == k
        if not bad.any():
            return out
        out[bad] = rng.integers(1, N + 1, size=int(bad.sum()))


def _history_pairs(offsets: np.ndarray, items: np.ndarray, rows: np.ndarray, target: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(batch position, item) of every input-history event of `rows`, minus the target's own.

    May repeat a pair (an item consumed twice); consumers only set or test membership.
    """
    hpos, hflat = _csr_rows(offsets, rows)
    hi = items[hflat]
    keep = hi != target[hpos]
    return hpos[keep], hi[keep]


def _distinct_per_row(hist_b: np.ndarray, hist_i: np.ndarray, rows: int, num_items: int) -> np.ndarray:
    """(rows,) number of distinct items per batch row among the (row, item) pairs, repeats counted once."""
    if not len(hist_b):
        return np.zeros(rows, dtype=np.int64)
    keys = np.unique(hist_b * (num_items + 1) + hist_i)
    return np.bincount(keys // (num_items + 1), minlength=rows).astype(np.int64)


_LANE_COLS = 8 * 255     # bool columns per group of 255 uint64 words (see _row_counts)


def _row_counts(m: np.ndarray) -> np.ndarray:
    """Number of True per row of a C-contiguous bool matrix whose width is a multiple of 2040.

    numpy's bool reduction along an axis is slow; instead each row is read as uint64 words holding
    8 one-byte 0/1 lanes, and groups of 255 words are added: a lane then holds at most 255, so no
    carry crosses lanes, and the row count is the sum of the bytes of the group sums.
    """
    rows = m.shape[0]
    lanes = m.view(np.uint64).reshape(rows, -1, 255).sum(axis=2)              # (rows, groups)
    return lanes.view(np.uint8).reshape(rows, -1).sum(axis=1, dtype=np.int64)


class _RankCounter:
    """rank = #candidates whose score is not below the target's, for a batch of score rows.

    Non-candidates (padding column 0, excluded history pairs, the target itself) are marked
    "below" before counting. On CPU this runs in numpy over blocks of `block_rows` rows split
    between threads: a block's boolean mask (block_rows x (N+1)) stays in the core's cache from
    the comparison through the marking to the count, so the scores are read from memory once, and
    numpy releases the GIL inside each op. torch's CPU comparison + bool reduction is several times
    slower; on other devices the same steps run in torch.
    """

    numpy_on_cpu = True     # tests switch it off to run the torch branch on CPU

    def __init__(self, threads: int | None = None, block_rows: int = 16):
        self.threads = max(1, threads or min(2, torch.get_num_threads()))
        self.block_rows = block_rows
        self._pool = None
        self._local = threading.local()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __call__(self, scores: torch.Tensor, t_score: torch.Tensor, target: torch.Tensor,
                 hist_b: np.ndarray, hist_i: np.ndarray) -> np.ndarray:
        if scores.device.type != "cpu" or not self.numpy_on_cpu:
            return self._torch(scores, t_score, target, hist_b, hist_i)
        if scores.dtype == torch.bfloat16:                     # numpy has no bfloat16; exact upcast
            scores, t_score = scores.float(), t_score.float()
        s, t, tg = scores.numpy(), t_score.numpy(), target.cpu().numpy()
        B = len(s)
        starts = np.arange(0, B, self.block_rows)
        cuts = np.searchsorted(hist_b, np.append(starts, B))  # hist_b is sorted by batch row
        out = np.empty(B, dtype=np.int64)

        width = -(-s.shape[1] // _LANE_COLS) * _LANE_COLS     # buffer columns, padding stays False

        def block(j):
            r0, r1 = starts[j], min(starts[j] + self.block_rows, B)
            buf = getattr(self._local, "buf", None)
            if buf is None or buf.shape != (self.block_rows, width) or self._local.cols != s.shape[1]:
                buf = self._local.buf = np.zeros((self.block_rows, width), dtype=bool)
                self._local.cols = s.shape[1]                 # columns past it stay False
            m = buf[:r1 - r0]
            below = m[:, :s.shape[1]]
            np.less(s[r0:r1], t[r0:r1, None], out=below)
            below[:, 0] = True
            h0, h1 = cuts[j], cuts[j + 1]
            below[hist_b[h0:h1] - r0, hist_i[h0:h1]] = True
            below[np.arange(r1 - r0), tg[r0:r1]] = True
            out[r0:r1] = s.shape[1] - _row_counts(m)

        if self.threads == 1 or len(starts) == 1:
            for j in range(len(starts)):
                block(j)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads)
            list(self._pool.map(block, range(len(starts))))
        return out

    @staticmethod
    def _torch(scores, t_score, target, hist_b, hist_i) -> np.ndarray:
        device = scores.device
        below = scores < t_score[:, None]                                 # (B, N+1)
        below[:, 0] = True
        if len(hist_b):
            below[torch.from_numpy(hist_b).to(device), torch.from_numpy(hist_i).to(device)] = True
        below[torch.arange(len(below), device=device), target.to(device)] = True
        return (scores.shape[1] - below.sum(1)).cpu().numpy()


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
        given = tuple(ks) if isinstance(ks, (list, tuple)) else None
        if not given or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1
                            for k in given):
            raise RecError(f"Evaluator.ks={ks!r}: give one or more positive integer cut-offs, "
                           "e.g. (5, 10, 20, 50)")
        self.ks = tuple(int(k) for k in given)
        if num_generated < max(self.ks):
            raise RecError(f"Evaluator.num_generated={num_generated} is smaller than the largest "
                           f"cut-off K={max(self.ks)}; set num_generated >= {max(self.ks)}")
        if batch_size < 1:
            raise RecError(f"Evaluator.batch_size={batch_size}: must be >= 1")
        self.exclude_history = exclude_history
        self.batch_size = batch_size
        self.max_history = max_history
        self.sampled = sampled
        self.num_sampled = num_sampled
        self.sample_seed = sample_seed
        self.num_generated = num_generated
        self.device = device
        self.progress = progress

    def protocol(self) -> dict:
        """What a report must print beside the numbers (docs/protocol.md §3)."""
        return {"exclude_history": self.exclude_history, "ks": list(self.ks),
                "ties": "pessimistic", "max_history": self.max_history,
                "sampled": ({"name": SAMPLED, "num_negatives": self.num_sampled,
                             "seed": self.sample_seed, "scorers_only": True}
                            if self.sampled else None),
                "num_generated": self.num_generated}

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
        all_users, mine = users, None
        if distributed.world_size() > 1:
            # Negatives are drawn for all users first, so each user's are the single-process ones.
            mine = distributed.shard(np.arange(len(users)))
            users = users[mine]
            negs = negs[mine] if do_sampled else None
        full_ranks = np.empty(len(users), dtype=np.int64)
        full_cands = np.empty(len(users), dtype=np.int64)     # candidates per user, target included
        full_ranked = np.empty(len(users), dtype=np.int64)    # of which the model ranked
        samp_ranks = np.empty(len(users), dtype=np.int64) if do_sampled else None
        counter = _RankCounter()
        it = range(0, len(users), self.batch_size)
        try:
            for s in tqdm(it, desc=f"eval {stage}", disable=not self.progress or not distributed.is_main(),
                          leave=False):
                rows = users[s:s + self.batch_size]
                batch = history_batch(offsets, items, times, rows, self.max_history).to(device)
                target_np = targets_all[rows]
                hb, hi = (_history_pairs(offsets, items, rows, target_np)
                          if self.exclude_history else (np.empty(0, np.int64), np.empty(0, np.int64)))
                target = torch.from_numpy(target_np).to(device)
                cut = slice(s, s + len(rows))
                full_cands[cut] = split.num_items - _distinct_per_row(hb, hi, len(rows), split.num_items)
                if is_scorer:
                    r, sr = self._rank_scores(model, batch, target, hb, hi, split.num_items,
                                              negs[s:s + len(rows)] if do_sampled else None,
                                              counter)
                    full_ranks[cut], full_ranked[cut] = r, full_cands[cut]
                    if do_sampled:
                        samp_ranks[cut] = sr
                else:
                    full_ranks[cut], full_ranked[cut] = self._rank_generated(model, batch, target, hb,
                                                                             hi, split.num_items)
        finally:
            counter.close()
            if was_training:
                model.train()
        if mine is not None:
            full_ranks = distributed.all_gather_rows(full_ranks, mine, len(all_users))
            full_cands = distributed.all_gather_rows(full_cands, mine, len(all_users))
            full_ranked = distributed.all_gather_rows(full_ranked, mine, len(all_users))
            if do_sampled:
                samp_ranks = distributed.all_gather_rows(samp_ranks, mine, len(all_users))
            users = all_users
        weights = split.train_lengths[users]                 # GAUC: training interactions per user
        metrics = {FULL: metrics_from_ranks(full_ranks, self.ks, full_mrr=is_scorer,
                                            num_candidates=full_cands, num_ranked=full_ranked,
                                            weights=weights)}
        ranks, cands, ranked = {FULL: full_ranks}, {FULL: full_cands}, {FULL: full_ranked}
        if do_sampled:
            samp_cands = np.full(len(users), self.num_sampled + 1, dtype=np.int64)
            metrics[SAMPLED] = metrics_from_ranks(samp_ranks, self.ks, num_candidates=samp_cands,
                                                  weights=weights)
            ranks[SAMPLED], cands[SAMPLED], ranked[SAMPLED] = samp_ranks, samp_cands, samp_cands
        return EvalResult(stage, metrics, ranks, users, self.exclude_history, candidates=cands,
                          ranked=ranked)

    def _rank_scores(self, model, batch, target, hist_b, hist_i, num_items, negs, counter):
        """Pessimistic 0-based ranks of the targets: full ranking, and sampled when `negs` is given.

        The model's score matrix is only read, never copied or written (it may be a view), and not
        kept past this call (a scorer may reuse one output buffer).
        """
        B = len(target)
        scores = model.score_all(batch).detach()                          # (B, N+1)
        if tuple(scores.shape) != (B, num_items + 1):
            raise RecError(f"{type(model).__name__}.score_all returned shape {tuple(scores.shape)}; "
                           f"expected (batch, num_items + 1) = ({B}, {num_items + 1})")
        if not scores.is_floating_point():
            scores = scores.double()                                      # exact for counts
        device = scores.device
        target = target.to(device)
        t_score = scores[torch.arange(B, device=device), target]          # (B,)
        samp = None
        if negs is not None:
            cand = scores.gather(1, torch.from_numpy(negs).to(device))    # (B, n)
            samp = (~(cand < t_score[:, None])).sum(1).cpu().numpy()
        return counter(scores, t_score, target, hist_b, hist_i), samp

    def _rank_generated(self, model, batch, target, hist_b, hist_i, num_items):
        """0-based position of the target among the valid generated items (MISS when absent), and
        the number of valid generated items per row (what AUC credits as ranked).

        Valid = a real item id (1..N), first occurrence in its row, and (with exclude_history) not
        in the input history unless it is the target; invalid items are dropped and the list is
        compacted, so they never push the target down.
        """
        device = target.device
        ranked = model.generate(batch, self.num_generated).to(device).long()     # (B, G)
        B = len(target)
        if ranked.dim() != 2 or ranked.shape[0] != B:
            raise RecError(f"{type(model).__name__}.generate returned shape {tuple(ranked.shape)}; "
                           f"expected (batch, num_items) = ({B}, {self.num_generated})")
        ranked = ranked[:, :self.num_generated]            # never credit items past the beam width
        valid = (ranked > 0) & (ranked <= num_items)
        G = ranked.shape[1]
        earlier = torch.ones(G, G, dtype=torch.bool, device=device).tril(-1)     # [j, j'] j' < j
        dup = ((ranked[:, :, None] == ranked[:, None, :]) & earlier).any(2)      # (B, G)
        valid &= ~dup
        if len(hist_b):
            # membership of each generated item in the (target-free) history pairs
            hkeys = torch.from_numpy(np.sort(hist_b * (num_items + 1) + hist_i)).to(device)
            gkeys = torch.arange(B, device=device)[:, None] * (num_items + 1) + ranked
            idx = torch.searchsorted(hkeys, gkeys).clamp(max=len(hkeys) - 1)
            valid &= hkeys[idx] != gkeys
        hit = (ranked == target[:, None]) & valid
        before = torch.cumsum(valid.long(), 1) - 1                                # rank among valid
        r = torch.where(hit.any(1), before.gather(1, hit.long().argmax(1, keepdim=True))[:, 0],
                        torch.full_like(target, MISS))
        return r.cpu().numpy(), valid.sum(1).cpu().numpy()
