"""The semantic-ID artifact (docs/protocol.md §4): the only thing stage 2 reads from stage 1.

Files in a run directory:
  semantic_ids.safetensors  {"codes": int64 (N+1, L+1)}; row = item id, row 0 (padding) is all -1;
                            columns 0..L-1 are the quantizer codes, column L the disambiguation code.
                            "items_by_id": int64 (N,), the item ids sorted by their full ID
                            (the ID -> item map; optional, rebuilt from codes when absent).
  semantic_ids.json         levels, codebook_size, num_disambiguation (max d + 1), tokenizer,
                            metrics, embedding and dataset fingerprints, info (embedding source...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors, read_json, save_tensors, write_json
from retrieval.data.types import ItemCatalogue

CODES_FILE = "semantic_ids.safetensors"
META_FILE = "semantic_ids.json"


@dataclass
class SemanticIds:
    codes: np.ndarray                    # (N+1, L+1) int64, row 0 = -1
    codebook_size: int
    dataset_fingerprint: str
    embedding_fingerprint: str = ""
    tokenizer: str = ""
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # embedding source/model, seed: provenance only

    @property
    def levels(self) -> int:
        return self.codes.shape[1] - 1

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def num_disambiguation(self) -> int:
        return int(self.codes[1:, -1].max()) + 1 if self.num_items else 1

    def _radices(self) -> list[int]:
        return [self.codebook_size] * self.levels + [self.num_disambiguation]

    def _narrow(self) -> bool:
        """Whether full IDs fit a mixed-radix int64 key (wide IDs, e.g. 32 OPQ codes, do not)."""
        return float(np.prod(np.array(self._radices(), dtype=np.float64))) < 2.0 ** 62

    def _id_keys(self, ids: np.ndarray) -> np.ndarray:
        """Mixed-radix int64 key of full IDs (..., L+1); equal keys <=> equal IDs (narrow IDs)."""
        key = np.zeros(ids.shape[:-1], dtype=np.int64)
        for col, r in enumerate(self._radices()):
            key = key * int(r) + ids[..., col]
        return key

    def items_by_id(self) -> np.ndarray:
        """(N,) item ids ordered by their full ID (lexicographic): the ID -> item map."""
        if getattr(self, "_items_by_id", None) is None:
            rows = self.codes[1:]
            order = (np.argsort(self._id_keys(rows), kind="stable") if self._narrow()
                     else np.lexsort(rows.T[::-1]))
            self._items_by_id = order.astype(np.int64) + 1
        return self._items_by_id

    def ids_of(self, items: np.ndarray) -> np.ndarray:
        """Item ids (...,) -> their full semantic IDs (..., L+1)."""
        return self.codes[np.asarray(items, dtype=np.int64)]

    def items_of(self, ids: np.ndarray) -> np.ndarray:
        """Full semantic IDs (..., L+1) -> item ids (...,); 0 where no item has that ID."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.num_items == 0:
            return np.zeros(ids.shape[:-1], dtype=np.int64)
        valid = ((ids >= 0) & (ids < np.array(self._radices()))).all(-1)
        order = self.items_by_id()
        queries = np.where(valid[..., None], ids, 0)
        if self._narrow():
            keys, sorted_keys = self._id_keys(queries), self._id_keys(self.codes[order])
        else:   # rank every row among the catalogue's and the queries' rows: equal rows, equal rank
            flat = queries.reshape(-1, ids.shape[-1])
            _, rank = np.unique(np.concatenate([self.codes[order], flat]), axis=0, return_inverse=True)
            rank = rank.reshape(-1)
            sorted_keys, keys = rank[:len(order)], rank[len(order):].reshape(ids.shape[:-1])
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(order) - 1)
        return np.where(valid & (sorted_keys[pos] == keys), order[pos], 0)

    def check_dataset(self, fingerprint: str, where: str = "semantic-ID artifact") -> None:
        if self.dataset_fingerprint != fingerprint:
            raise RecError(f"{where} was built for another dataset or split (fingerprint "
                           f"{self.dataset_fingerprint} != {fingerprint}); re-run "
                           "scripts/train_rqvae.py with the same dataset config")

    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        save_tensors(run_dir / CODES_FILE, {"codes": torch.from_numpy(self.codes.astype(np.int64)),
                                            "items_by_id": torch.from_numpy(self.items_by_id())})
        write_json(run_dir / META_FILE, {
            "levels": self.levels, "codebook_size": self.codebook_size,
            "num_disambiguation": self.num_disambiguation, "num_items": self.num_items,
            "tokenizer": self.tokenizer, "dataset_fingerprint": self.dataset_fingerprint,
            "embedding_fingerprint": self.embedding_fingerprint, "metrics": self.metrics,
            "info": self.info})

    @classmethod
    def load(cls, run_dir: Path) -> "SemanticIds":
        run_dir = Path(run_dir)
        if not (run_dir / CODES_FILE).is_file():
            raise RecError(f"{run_dir / CODES_FILE} not found; point to the --run_dir of a finished "
                           "scripts/train_rqvae.py run")
        meta = read_json(run_dir / META_FILE)
        required = {"levels": int, "codebook_size": int, "dataset_fingerprint": str}
        bad = [k for k, t in required.items() if not isinstance(meta, dict) or not isinstance(meta.get(k), t)]
        if bad:
            raise RecError(f"{run_dir / META_FILE}: missing or invalid key(s) {', '.join(bad)}; the "
                           "artifact is damaged, re-run scripts/train_rqvae.py")
        tensors = load_tensors(run_dir / CODES_FILE)
        codes = tensors.get("codes")
        if codes is None or codes.ndim != 2 or codes.shape[1] != meta.get("levels", -1) + 1:
            raise RecError(f"{run_dir / CODES_FILE}: codes do not match {META_FILE}; the artifact "
                           "is damaged, re-run scripts/train_rqvae.py")
        sids = cls(codes=codes.numpy().astype(np.int64), codebook_size=int(meta["codebook_size"]),
                   dataset_fingerprint=meta["dataset_fingerprint"],
                   embedding_fingerprint=meta.get("embedding_fingerprint", ""),
                   tokenizer=meta.get("tokenizer", ""), metrics=meta.get("metrics", {}),
                   info=meta.get("info", {}))
        order = tensors.get("items_by_id")
        if order is not None and order.shape == (sids.num_items,):
            sids._items_by_id = order.numpy().astype(np.int64)
        return sids


# Readable names of the codes (onerec.explain): for every level-1 code and level-1/2 prefix, the
# most common catalogue value (category, genre or brand) among the items under it, leaving out
# values that half the catalogue carries (e.g. "Beauty") unless nothing else is there; ties go to
# the rarer value.
CODE_NAMES_FILE = "code_names.json"
NAME_FIELDS = ("categories", "genres", "brand")     # the first the catalogue has names the codes


def _values(catalogue: ItemCatalogue) -> tuple[str | None, list[list[str]]]:
    """The naming field and each item's values of it ("|"-separated; row 0 empty)."""
    for name in NAME_FIELDS:
        col = catalogue.fields.get(name)
        if col is not None:
            vals = [[v for v in str(s).split("|") if v and v != "(no genres listed)"] for s in col]
            return name, vals
    return None, [[] for _ in range(catalogue.num_items + 1)]


def code_names(codes: np.ndarray, catalogue: ItemCatalogue, levels: int = 2) -> dict:
    """{"field": name, "1": {"c1": value}, "2": {"c1-c2": value}} for the item codes (N+1, L+1)."""
    field, values = _values(catalogue)
    out: dict = {"field": field}
    item = np.repeat(np.arange(len(values)), [len(v) for v in values])
    if field is None or len(item) == 0:
        return {**out, **{str(l): {} for l in range(1, levels + 1)}}
    vocab, token = np.unique(np.concatenate([np.asarray(v, dtype=object) for v in values if v]).astype(str),
                             return_inverse=True)
    keep = item > 0
    item, token = item[keep], token[keep]
    df = np.bincount(token, minlength=len(vocab))                          # items per value
    idf = np.log(catalogue.num_items / np.maximum(df, 1))
    for level in range(1, min(levels, codes.shape[1]) + 1):
        prefixes, prefix_of = np.unique(codes[:, :level], axis=0, return_inverse=True)
        pair = prefix_of.reshape(-1)[item] * len(vocab) + token
        keys, counts = np.unique(pair, return_counts=True)
        value = keys % len(vocab)
        generic = df[value] > catalogue.num_items / 2                     # e.g. "Beauty" on every item
        order = np.lexsort((-idf[value], -counts, generic, keys // len(vocab)))   # best first per prefix
        first = np.r_[True, np.diff(keys[order] // len(vocab)) > 0]
        best = order[first]
        out[str(level)] = {"-".join(map(str, prefixes[k // len(vocab)])): str(vocab[k % len(vocab)])
                           for k in keys[best]}
    return out


def save_code_names(run_dir: Path, codes: np.ndarray, catalogue: ItemCatalogue) -> None:
    write_json(Path(run_dir) / CODE_NAMES_FILE, code_names(codes, catalogue))


def load_code_names(sid_dir: Path, codes: np.ndarray, catalogue: ItemCatalogue) -> dict:
    path = Path(sid_dir) / CODE_NAMES_FILE
    return read_json(path) if path.is_file() else code_names(codes, catalogue)
