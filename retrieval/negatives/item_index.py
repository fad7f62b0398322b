"""A nearest-item index over item embeddings (one wrapper over faiss), for hard-negative mining and
for finding semantically similar items (docs/protocol.md §5).

Ids: the index holds items 1..N; the padding item 0 is never added, so it is never returned. Search
results use item ids directly, with 0 marking "no result" (score -inf) when an approximate index or a
tiny catalogue cannot supply k items after exclusions.

Scores are inner products (higher = nearer); `metric="cosine"` L2-normalises items and queries first.
Index kinds: "flat" (exact, default), "ivf" (inverted lists; for large catalogues), "hnsw" (graph).
A GPU copy is used when faiss was built with GPU support and a GPU is visible (flat and ivf only:
faiss has no GPU HNSW).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import faiss
import gin
import numpy as np
import torch

from retrieval.core.errors import RecError

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("ip", "cosine")


class SearchResult(NamedTuple):
    """scores: (Q, k) float32, best first, -inf where ids == 0.  ids: (Q, k) int64 item ids, 0 = none."""

    scores: np.ndarray
    ids: np.ndarray


def as_float_matrix(x: Any) -> np.ndarray:
    """A contiguous float32 numpy matrix from a numpy array or a (possibly GPU, grad-tracking) tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def item_rows(embeddings: Any, num_items: int | None = None) -> np.ndarray:
    """Embeddings of items 1..N as (N, d): accepts (N+1, d) with a padding row 0, or (N, d).

    With `num_items` given the shape decides; without it the matrix is taken to carry a padding
    row, which is the convention of every model's item embedding table.
    """
    emb = as_float_matrix(embeddings)
    if emb.ndim != 2:
        raise RecError(f"item embeddings must be a 2-d matrix (items x dim), got shape {emb.shape}")
    if num_items is None or emb.shape[0] == num_items + 1:
        return emb[1:]
    if emb.shape[0] == num_items:
        return emb
    raise RecError(f"item embeddings have {emb.shape[0]} rows but the catalogue has {num_items} "
                   f"items; pass a ({num_items}+1, d) or ({num_items}, d) matrix built for this dataset")


def _gpu_device() -> int:
    """This process's GPU: under torchrun every rank has set its own (cuda:LOCAL_RANK)."""
    import torch
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def exclusion_mask(ids: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """(Q, K) bool: ids[q, j] is one of the nonzero items in exclude[q] (exclude (Q, M), 0 = pad).

    Vectorised by giving each row its own key range (row * (max_id + 1) + item) and one sorted
    membership test, instead of a (Q, K, M) broadcast.
    """
    if exclude.size == 0 or ids.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    base = int(max(ids.max(), exclude.max())) + 1
    rows = np.arange(ids.shape[0], dtype=np.int64)[:, None]
    keys = (rows * base + exclude)[exclude > 0]
    keys.sort()
    if keys.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    probe = rows * base + ids
    pos = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
    return keys[pos] == probe


@gin.configurable
class ItemIndex:
    """Nearest items by inner product over items 1..N.

    embeddings: (N+1, d) with padding row 0 (a model's item table) or (N, d) items 1..N with
                `num_items=N` (e.g. content embeddings); numpy or torch.
    kind:       "flat" | "ivf" | "hnsw".   metric: "ip" | "cosine".
    nlist/nprobe: IVF lists and lists probed; hnsw_m/ef_search/ef_construction: HNSW graph settings.
    use_gpu:    "auto" (GPU when faiss-gpu and a GPU are present), True (require it) or False.
    """

    def __init__(self, embeddings: Any, num_items: int | None = None, kind: str = "flat",
                 metric: str = "ip", nlist: int = 256, nprobe: int = 16, hnsw_m: int = 32,
                 ef_search: int = 128, ef_construction: int = 80, use_gpu: Any = "auto",
                 seed: int = 0):
        if kind not in KINDS:
            raise RecError(f"ItemIndex.kind={kind!r} is unknown; choose one of {', '.join(KINDS)}")
        if metric not in METRICS:
            raise RecError(f"ItemIndex.metric={metric!r} is unknown; choose one of {', '.join(METRICS)}")
        if use_gpu is True and not gpu_available():
            raise RecError("ItemIndex.use_gpu=True but faiss sees no GPU (faiss-gpu missing or no "
                           "CUDA device); set ItemIndex.use_gpu='auto' or False")
        self.kind, self.metric = kind, metric
        self.nlist, self.nprobe = nlist, nprobe
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.on_gpu = bool(use_gpu) and gpu_available() and kind != "hnsw"
        self.seed = seed
        self._gpu_res = None
        self.num_items = num_items
        self.refresh(embeddings)

    # -- building -----------------------------------------------------------------------------
    def refresh(self, embeddings: Any) -> None:
        """Rebuild from new embeddings (same layout as at construction), e.g. every R training steps."""
        items = item_rows(embeddings, self.num_items)                # (N, d)
        if self.num_items is not None and items.shape[0] != self.num_items:
            raise RecError(f"ItemIndex.refresh got {items.shape[0]} items, index holds {self.num_items}")
        if self.metric == "cosine":
            items = items.copy()
            faiss.normalize_L2(items)
        self.num_items, self.dim = items.shape
        self.vectors = items                                         # row i-1 = item i
        self.index = self._build(items)

    def _build(self, items: np.ndarray):
        n, d = items.shape
        ip = faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "ivf":
            # IVF needs a few dozen training points per list; shrink nlist for small catalogues.
            nlist = max(1, min(self.nlist, n // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
            index.cp.seed = self.seed
            index.train(items)
            index.nprobe = min(self.nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, ip)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        if self.on_gpu:
            if self._gpu_res is None:
                self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, _gpu_device(), index)  # copies nprobe too
        index.add(items)
        return index

    def item_vectors(self, items: np.ndarray) -> np.ndarray:
        """Indexed (normalised, for cosine) vectors of item ids (any shape) -> (..., d); id 0 -> zeros."""
        items = np.asarray(items, dtype=np.int64)
        out = np.zeros(items.shape + (self.dim,), dtype=np.float32)
        real = items > 0
        out[real] = self.vectors[items[real] - 1]
        return out

    # -- searching ----------------------------------------------------------------------------
    def search(self, queries: Any, k: int, exclude: Any = None,
               max_excluded: int | None = None) -> SearchResult:
        """The k nearest items to each query row, skipping excluded items.

        queries: (Q, d) float.  exclude: None; or (Q, M) int item ids per row, 0 = padding (e.g. the
        history plus the target); or a callable `exclude(rows (R,), ids (R, K)) -> (R, K) bool` (True =
        skip) for exclusion sets too large to materialise, e.g. a membership test on history keys.
        Over-fetches, masks and compacts, vectorised. With a matrix the first fetch is k + (most
        exclusions in a row), which an exact index always completes; rows still short of k items
        (callable exclusions) are searched again with a doubled fetch until the catalogue is exhausted.
        max_excluded: for a callable, a bound on the items it excludes per row (the first fetch is then
        k + max_excluded instead of 2k; a wrong bound only costs another round).
        """
        q = as_float_matrix(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise RecError(f"ItemIndex.search: queries must be (Q, {self.dim}), got {q.shape}")
        if self.metric == "cosine":
            q = q.copy()
            faiss.normalize_L2(q)
        if exclude is None or callable(exclude):
            excluded, extra = exclude, 0 if exclude is None else (
                k if max_excluded is None else int(max_excluded))
        else:
            ex = np.asarray(exclude.detach().cpu().numpy() if isinstance(exclude, torch.Tensor)
                            else exclude, dtype=np.int64)
            if ex.ndim != 2 or ex.shape[0] != q.shape[0]:
                raise RecError(f"ItemIndex.search: exclude must be (Q, M) with Q={q.shape[0]}, "
                               f"got {ex.shape}")
            extra = int((ex > 0).sum(axis=1).max()) if ex.size else 0
            excluded = (lambda rows, ids: exclusion_mask(ids, ex[rows])) if extra else None
        Q = q.shape[0]
        out_ids = np.zeros((Q, k), dtype=np.int64)
        out_scores = np.full((Q, k), -np.inf, dtype=np.float32)
        pending = np.arange(Q)
        fetch = min(k + extra, self.num_items)
        while pending.size and k > 0:
            if self.kind == "hnsw":
                self.index.hnsw.efSearch = max(self.ef_search, fetch)
            scores, labels = self.index.search(q[pending], fetch)       # (R, fetch), -1 = none
            ids = np.where(labels >= 0, labels + 1, 0).astype(np.int64)
            drop = ids == 0
            if excluded is not None:
                drop |= excluded(pending, ids)
            # Stable sort on the drop flag keeps survivors in rank order and moves dropped slots last.
            order = np.argsort(drop, axis=1, kind="stable")[:, :k]
            ids = np.take_along_axis(ids, order, axis=1)
            scores = np.take_along_axis(scores.astype(np.float32), order, axis=1)
            gone = np.take_along_axis(drop, order, axis=1)
            ids[gone], scores[gone] = 0, -np.inf
            # A row is final when it has k items, the whole catalogue was fetched, or the
            # (approximate) index ran out of candidates (-1 labels) and more fetching cannot help.
            done = (~gone).sum(axis=1) >= min(k, ids.shape[1])
            done |= (fetch >= self.num_items) | (labels < 0).any(axis=1)
            width = ids.shape[1]
            out_ids[pending[done], :width] = ids[done]
            out_scores[pending[done], :width] = scores[done]
            pending = pending[~done]
            fetch = min(2 * fetch, self.num_items)
        return SearchResult(out_scores, out_ids)

    def neighbour_table(self, k: int, batch_size: int = 4096) -> np.ndarray:
        """(N+1, k) int64: row i = the k nearest other items of item i (never i itself); row 0 = 0.

        The item itself is excluded by id, so a duplicate embedding of another item is still a
        valid neighbour. Entries are 0 only when fewer than k other items can be found.
        """
        table = np.zeros((self.num_items + 1, k), dtype=np.int64)
        for start in range(1, self.num_items + 1, batch_size):       # chunks bound memory only
            items = np.arange(start, min(start + batch_size, self.num_items + 1))
            table[items] = self.search(self.vectors[items - 1], k, exclude=items[:, None]).ids
        return table
