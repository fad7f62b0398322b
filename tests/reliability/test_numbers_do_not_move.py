"""Numbers do not move: tiny fixed-seed runs of every trained model family, as a user runs them
(the scripts, synthetic data), give the metrics and semantic IDs recorded in
numbers_recorded.json before the training loops were merged into one Trainer.

Exact on the CPU that recorded them (same `cpu` string, same torch); elsewhere float kernels may
round differently, so metrics then agree to 1e-6 relative and the semantic IDs exactly.

    SEMID_RECORD_NUMBERS=1 python -m pytest tests/reliability/test_numbers_do_not_move.py   # re-record
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from reliability_cases import ONEREC_TINY, SCORER_TINY, SID_TINY, SYN, gin_args, run_script
from retrieval.core.io import load_tensors

RECORDED = Path(__file__).with_name("numbers_recorded.json")

RQVAE_TINY = ["make_tokenizer.name='rqvae'", "make_tokenizer.levels=2", "make_tokenizer.codebook_size=4",
              "item_embeddings.source='collaborative'", "item_embeddings.dim=8",
              "RQVAETokenizer.hidden_dims=(16,)", "RQVAETokenizer.latent_dim=4", "RQVAETokenizer.steps=30",
              "RQVAETokenizer.batch_size=16", "RQVAETokenizer.kmeans_init_size=16",
              "RQVAETokenizer.reset_every=10"]
CF_TINY = ["CFTrainer.num_epochs=3", "CFTrainer.batch_size=64", "CFTrainer.progress=False",
           "CFTrainer.num_threads=1", "BPRMF.dim=8", "Evaluator.progress=False"]
ONEREC_EVAL = ["OneRecTrainer.max_steps=6", "OneRecTrainer.eval_every_steps=3", "OneRecTrainer.eval_users=30"]

# (name, script, gin file, bindings); train_onerec reads the semantic IDs of 'rqkmeans'.
RUNS = [
    ("rqkmeans", "train_rqvae.py", "configs/synthetic/rqkmeans.gin", SYN + SID_TINY),
    ("rqvae", "train_rqvae.py", "configs/synthetic/rqvae.gin", SYN + RQVAE_TINY),
    ("sasrec-bce", "train_sasrec.py", "configs/synthetic/sasrec-bce.gin", SYN + SCORER_TINY),
    ("sasrec-ce", "train_sasrec.py", "configs/synthetic/sasrec-ce.gin", SYN + SCORER_TINY),
    ("onerec", "train_onerec.py", "configs/synthetic/onerec.gin", SYN + ONEREC_TINY + ONEREC_EVAL),
    ("bpr-mf", "train_cf.py", "configs/synthetic/bpr-mf.gin", SYN + CF_TINY),
]


def _metrics(results: dict) -> dict:
    """{"<model>/<split>/<protocol>/<metric>": value} of a results.json."""
    out = {}
    for model, by_split in results["models"].items():
        for split in ("valid", "test"):
            for proto, metrics in by_split[split].items():
                if isinstance(metrics, dict):
                    for k, v in metrics.items():
                        out[f"{model}/{split}/{proto}/{k}"] = float(v)
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _observe(tmp: Path) -> dict:
    cache = tmp / "cache"
    seen: dict = {}
    for name, script, gin_file, params in RUNS:
        run_dir = tmp / name
        if script == "train_onerec.py":
            params = params + [f"train_onerec.semantic_ids_dir='{tmp / 'rqkmeans'}'"]
        proc = run_script(script, ["--gin_file", gin_file, *gin_args(params), "--run_dir", str(run_dir)],
                          cache)
        assert proc.returncode == 0, f"{script} ({name}) failed:\n{proc.stderr[-3000:]}"
        if script == "train_rqvae.py":
            codes = load_tensors(run_dir / "semantic_ids.safetensors")["codes"]
            seen[name] = {"codes": codes.tolist()}
        else:
            seen[name] = {"metrics": _metrics(json.loads((run_dir / "results.json").read_text()))}
    return seen


@pytest.mark.slow
def test_tiny_runs_reproduce_the_recorded_numbers(tmp_path):
    seen = _observe(tmp_path)
    here = {"cpu": _cpu(), "torch": torch.__version__}
    if os.environ.get("SEMID_RECORD_NUMBERS"):
        RECORDED.write_text(json.dumps({**here, "runs": seen}, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORDED.read_text())
    exact = recorded["cpu"] == here["cpu"] and recorded["torch"] == here["torch"]
    assert sorted(seen) == sorted(recorded["runs"])
    for name, want in recorded["runs"].items():
        got = seen[name]
        if "codes" in want:
            assert got["codes"] == want["codes"], f"{name}: semantic IDs changed"
            continue
        assert sorted(got["metrics"]) == sorted(want["metrics"]), f"{name}: metric names changed"
        for key, value in want["metrics"].items():
            if exact:
                assert got["metrics"][key] == value, f"{key}: {got['metrics'][key]!r} != recorded {value!r}"
            else:
                assert np.isclose(got["metrics"][key], value, rtol=1e-6, atol=1e-9), key
