"""The semantic-ID artifact (SPEC §4): the only thing stage 2 reads from stage 1.

Files in a run directory:
  semantic_ids.safetensors  {"codes": int64 (N+1, L+1)}; row = item id, row 0 (padding) is all -1;
                            columns 0..L-1 are the quantizer codes, column L the disambiguation code.
  semantic_ids.json         levels, codebook_size, num_disambiguation (max d + 1), tokenizer,
                            metrics, embedding and dataset fingerprints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from retrieval.errors import RecError
from retrieval.io import load_tensors, read_json, save_tensors, write_json

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

    @property
    def levels(self) -> int:
        return self.codes.shape[1] - 1

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def num_disambiguation(self) -> int:
        return int(self.codes[1:, -1].max()) + 1 if self.num_items else 1

    def check_dataset(self, fingerprint: str, where: str = "semantic-ID artifact") -> None:
        if self.dataset_fingerprint != fingerprint:
            raise RecError(f"{where} was built for another dataset or split (fingerprint "
                           f"{self.dataset_fingerprint} != {fingerprint}); re-run "
                           "scripts/train_rqvae.py with the same dataset config")

    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        save_tensors(run_dir / CODES_FILE, {"codes": torch.from_numpy(self.codes.astype(np.int64))})
        write_json(run_dir / META_FILE, {
            "levels": self.levels, "codebook_size": self.codebook_size,
            "num_disambiguation": self.num_disambiguation, "num_items": self.num_items,
            "tokenizer": self.tokenizer, "dataset_fingerprint": self.dataset_fingerprint,
            "embedding_fingerprint": self.embedding_fingerprint, "metrics": self.metrics})

    @classmethod
    def load(cls, run_dir: Path) -> "SemanticIds":
        run_dir = Path(run_dir)
        if not (run_dir / CODES_FILE).is_file():
            raise RecError(f"{run_dir / CODES_FILE} not found; point to the --run_dir of a finished "
                           "scripts/train_rqvae.py run")
        meta = read_json(run_dir / META_FILE)
        codes = load_tensors(run_dir / CODES_FILE).get("codes")
        if codes is None or codes.ndim != 2 or codes.shape[1] != meta.get("levels", -1) + 1:
            raise RecError(f"{run_dir / CODES_FILE}: codes do not match {META_FILE}; the artifact "
                           "is damaged, re-run scripts/train_rqvae.py")
        return cls(codes=codes.numpy().astype(np.int64), codebook_size=int(meta["codebook_size"]),
                   dataset_fingerprint=meta["dataset_fingerprint"],
                   embedding_fingerprint=meta.get("embedding_fingerprint", ""),
                   tokenizer=meta.get("tokenizer", ""), metrics=meta.get("metrics", {}))
