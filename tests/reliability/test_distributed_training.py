"""Data-parallel training (retrieval.core.distributed): `torchrun --nproc_per_node=2` (gloo, CPU) of each
training script on tiny synthetic data reproduces the single-process run with the same global
batch, and only rank 0 writes into the run directory.

Each script runs twice from the same configs (dropout 0, so no RNG stream differs between the
runs): once as `python scripts/X.py`, once under torchrun. Global batch sizes are chosen so that
the last batch of an epoch splits unevenly over the two ranks. Under torchrun every process is
started through a small launcher that records, per rank, every file the process creates, opens
for writing, renames or deletes (Python audit hooks), so "rank 1 wrote nothing" is observed, not
inferred.
"""
from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = pytest.mark.slow  # every test runs the scripts, most under torchrun

ROOT = Path(__file__).resolve().parents[2]

DATA = """
SyntheticSource.num_users = 300
SyntheticSource.num_items = 150
"""

RQVAE_GIN = """include 'configs/synthetic/rqvae.gin'
make_tokenizer.codebook_size = 16
RQVAETokenizer.steps = 30
RQVAETokenizer.batch_size = 63          # odd: ranks get 32 and 31 rows
RQVAETokenizer.reset_every = 10         # dead-code resets use the gathered residuals
RQVAETokenizer.log_every = 10
RQVAETokenizer.hidden_dims = (64, 32)
RQVAETokenizer.latent_dim = 8
""" + DATA

SASREC_GIN = """include 'configs/synthetic/sasrec-bce.gin'
SequentialScorer.maxlen = 20
SequentialScorer.hidden = 16
SequentialScorer.dropout = 0.0
ScorerTrainer.num_epochs = 2
ScorerTrainer.eval_every = 1
ScorerTrainer.batch_size = 37           # 300 users -> last batch of 4 rows
ScorerTrainer.progress = False
ScorerTrainer.num_threads = 1
""" + DATA

ONEREC_GIN = """include 'configs/synthetic/onerec.gin'
train_onerec.semantic_ids_dir = '{sids}'
OneRecTrainer.num_threads = 1
train_onerec.final_users = 40
ParallelSidGenerator.d_model = 16
ParallelSidGenerator.num_heads = 2
ParallelSidGenerator.num_layers = 1
ParallelSidGenerator.dropout = 0.0
ParallelSidGenerator.max_len = 5
OneRecTrainer.batch_size = 45
OneRecTrainer.max_steps = 12
OneRecTrainer.max_minutes = 0
OneRecTrainer.eval_every_steps = 6
OneRecTrainer.eval_users = 40
OneRecTrainer.log_every_steps = 4
OneRecTrainer.progress = False
""" + DATA

# Runs the script as __main__ after installing an audit hook that appends one JSON line per
# file-system write event to $AUDIT_DIR/rank<RANK>.jsonl (through a raw fd: no audit recursion, and
# lines are on disk even though the script ends with os._exit).
LAUNCHER = """
import json, os, runpy, sys
fd = os.open(os.path.join(os.environ["AUDIT_DIR"], "rank%s.jsonl" % os.environ.get("RANK", "0")),
             os.O_WRONLY | os.O_CREAT | os.O_APPEND)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    path = None
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
            path = args[0]
    elif event in ("tempfile.mkstemp", "os.remove", "os.rmdir", "shutil.rmtree"):
        path = args[0]
    elif event == "os.rename":
        path = args[1]
    if path is not None:
        os.write(fd, (json.dumps({"event": event, "path": os.path.abspath(os.fsdecode(path))}) + "\\n").encode())

sys.addaudithook(hook)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(script))))
runpy.run_path(script, run_name="__main__")
"""


def _env(cache: Path) -> dict:
    env = {**os.environ, "SEMID_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    if sys.platform.startswith("linux"):
        # gloo binds to the address the hostname resolves to; in containers that may be none
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _run(cmd: list[str], env: dict) -> None:
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Single-process and torchrun runs of the three scripts; {name: (single_dir, ddp_dir, audit)}."""
    base = tmp_path_factory.mktemp("ddp")
    env = _env(base / "cache")           # shared: the second run reuses split and text embeddings
    launcher = base / "launcher.py"
    launcher.write_text(LAUNCHER)
    out = {}

    def both(name: str, script: str, gin_text: str):
        gin = base / f"{name}.gin"
        gin.write_text(gin_text)
        single, ddp, audit = base / f"{name}-single", base / f"{name}-ddp", base / f"{name}-audit"
        audit.mkdir()
        _run([sys.executable, f"scripts/{script}", "--gin_file", str(gin), "--run_dir", str(single)], env)
        _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              str(launcher), f"scripts/{script}", "--gin_file", str(gin), "--run_dir", str(ddp)],
             {**env, "AUDIT_DIR": str(audit)})
        out[name] = (single, ddp, audit)

    both("rqvae", "train_rqvae.py", RQVAE_GIN)
    both("sasrec", "train_sasrec.py", SASREC_GIN)
    both("onerec", "train_onerec.py", ONEREC_GIN.format(sids=out["rqvae"][0]))
    return out


def _audit(audit: Path, rank: int, run_dir: Path) -> list[dict]:
    path = audit / f"rank{rank}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [e for e in events if Path(e["path"]).is_relative_to(run_dir)]


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-8)


@pytest.mark.parametrize("name", ["rqvae", "sasrec", "onerec"])
def test_only_rank0_writes_into_the_run_directory(runs, name):
    single, ddp, audit = runs[name]
    assert _audit(audit, 1, ddp) == []
    written = {Path(e["path"]).name for e in _audit(audit, 0, ddp)}
    assert "results.json" in written and "config.gin" in written
    # the same artifacts as the single-process run, no more (no stray temporaries)
    assert sorted(p.relative_to(ddp).as_posix() for p in ddp.rglob("*")) == \
        sorted(p.relative_to(single).as_posix() for p in single.rglob("*"))


def test_rqvae_ddp_matches_single_process(runs):
    single, ddp, _ = runs["rqvae"]
    a, b = json.loads((single / "results.json").read_text()), json.loads((ddp / "results.json").read_text())
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha["step"] == hb["step"]
        assert ha["dead_codes_reset"] == hb["dead_codes_reset"]     # same resets on every rank
        assert ha["batch_usage"] == hb["batch_usage"]
        for k in ("loss", "recon_loss", "quant_loss"):
            assert _close(ha[k], hb[k]), (k, ha[k], hb[k])
    ids_a, ids_b = load_file(single / "semantic_ids.safetensors"), load_file(ddp / "semantic_ids.safetensors")
    np.testing.assert_array_equal(ids_a["codes"], ids_b["codes"])
    wa, wb = load_file(single / "tokenizer.safetensors"), load_file(ddp / "tokenizer.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _relative_weight_gap(a: dict, b: dict) -> float:
    keys = [k for k in a if k.startswith("model.")]
    assert keys and set(keys) == {k for k in b if k.startswith("model.")}
    diff = np.sqrt(sum(((a[k].astype(np.float64) - b[k]) ** 2).sum() for k in keys))
    return float(diff / np.sqrt(sum((a[k].astype(np.float64) ** 2).sum() for k in keys)))


def test_sasrec_ddp_matches_single_process(runs):
    single, ddp, _ = runs["sasrec"]
    ma, mb = _metrics(single), _metrics(ddp)
    assert [r["kind"] for r in ma] == [r["kind"] for r in mb] == ["train", "eval"] * 2   # written once
    for ra, rb in zip(ma, mb):
        assert (ra["epoch"], ra["step"]) == (rb["epoch"], rb["step"])
        if ra["kind"] == "train":
            assert ra["targets_per_s"] > 0 and rb["targets_per_s"] > 0
            assert _close(ra["loss"], rb["loss"]), (ra["loss"], rb["loss"])
        else:
            assert _close(ra["valid_ndcg@10"], rb["valid_ndcg@10"], 1e-6)
    ra, rb = load_file(single / "ranks.safetensors"), load_file(ddp / "ranks.safetensors")
    assert sorted(ra) == sorted(rb)
    for k in ra:                                            # gathered sharded evaluation
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    # Parameters: equal up to float summation order, which Adam amplifies only where the true
    # gradient is ~0 (e.g. attention key biases, to which softmax is invariant).
    gap = _relative_weight_gap(load_file(single / "checkpoints/last.safetensors"),
                               load_file(ddp / "checkpoints/last.safetensors"))
    assert gap < 1e-3, gap
    res_a, res_b = (json.loads((r / "results.json").read_text()) for r in (single, ddp))
    assert res_a["test"]["full"] == pytest.approx(res_b["test"]["full"], rel=1e-6)


def test_onerec_ddp_matches_single_process(runs):
    single, ddp, _ = runs["onerec"]
    ma, mb = _metrics(single), _metrics(ddp)
    assert [(r["kind"], r["step"]) for r in ma] == [(r["kind"], r["step"]) for r in mb]
    assert [r["kind"] for r in ma].count("eval") == 2
    for ra, rb in zip(ma, mb):
        if ra["kind"] == "train":
            assert _close(ra["loss"], rb["loss"]), (ra["loss"], rb["loss"])
        else:
            assert ra["valid_ndcg@10"] == pytest.approx(rb["valid_ndcg@10"], abs=1e-9)
    gap = _relative_weight_gap(load_file(single / "checkpoints/last.safetensors"),
                               load_file(ddp / "checkpoints/last.safetensors"))
    assert gap < 1e-3, gap
    ra, rb = load_file(single / "ranks.safetensors"), load_file(ddp / "ranks.safetensors")
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)


def test_a_user_error_under_torchrun_is_one_line_per_rank_and_leaves_no_run_dir(tmp_path):
    """Every rank reports the RecError in one line and exits 2 (after leaving the process group);
    what torchrun itself prints about a failed child is its own."""
    gin = tmp_path / "bad.gin"
    gin.write_text("include 'configs/synthetic/sasrec-bce.gin'\nSequentialScorer.maxlen = 0\n")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "scripts/train_sasrec.py", "--gin_file", str(gin),
                          "--run_dir", str(tmp_path / "run")],
                         cwd=ROOT, env=_env(tmp_path / "cache"), capture_output=True, text=True,
                         timeout=300)
    both = out.stdout + out.stderr
    assert out.returncode != 0
    assert both.count("error: SequentialScorer.maxlen = 0 must be > 0; fix it in the gin config") == 2
    assert "exitcode  : 2" in both                          # the rank's own exit status
    assert 'train_sasrec.py", line' not in both and "retrieval/" not in both   # no traceback of ours
    assert not (tmp_path / "run").exists()


def test_sasrec_resume_under_torchrun_continues_like_single_process(runs, tmp_path):
    """--resume with a raised epoch cap: the 2-process run continues from its checkpoint exactly
    as the single-process run continues from its own."""
    single, ddp, _ = runs["sasrec"]
    a, b = tmp_path / "single", tmp_path / "ddp"
    shutil.copytree(single, a)
    shutil.copytree(ddp, b)
    gin = tmp_path / "sasrec.gin"
    gin.write_text(SASREC_GIN)
    env = _env(tmp_path / "cache")
    more = ["--gin_param", "ScorerTrainer.num_epochs=3", "--resume"]
    _run([sys.executable, "scripts/train_sasrec.py", "--gin_file", str(gin), "--run_dir", str(a), *more], env)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "scripts/train_sasrec.py", "--gin_file", str(gin), "--run_dir", str(b), *more], env)
    ma, mb = ([m for m in _metrics(r) if m["kind"] == "train"] for r in (a, b))
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb] == [1, 2, 3]
    for ra, rb in zip(ma, mb):
        assert ra["step"] == rb["step"] and _close(ra["loss"], rb["loss"]), (ra, rb)
    ra, rb = load_file(a / "ranks.safetensors"), load_file(b / "ranks.safetensors")
    assert sorted(ra) == sorted(rb)
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
