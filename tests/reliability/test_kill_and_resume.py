"""Crash-safe training, as a user meets it: a training script killed with SIGKILL at random points
and restarted with --resume ends with the same test metrics as a run that was never interrupted;
a NaN/inf loss stops it with one line naming the step and leaves no corrupt checkpoint.

Kill points: each round lets the running process write 1 or 2 more checkpoints (seeded random
choice; so every round makes progress), then kills it after a seeded random delay, which lands
somewhere in the next training steps, evaluation or checkpoint write. The first round instead kills at a random
time after start-up, usually before any checkpoint exists (the restart then starts over).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reliability_cases import (ONEREC_TINY, REPO, SCORER_TINY, SID_TINY, SYN, env, gin_args, leftovers,
                               run_script, user_error_line)
from retrieval.core.io import load_tensors, read_json

pytestmark = pytest.mark.slow  # every test runs (and kills) the scripts in subprocesses

# Several short epochs (the scorer checkpoints once per epoch) / steps (OneRec: every 2 steps).
SCORER_RUN = ["--gin_file", "configs/synthetic/sasrec-bce.gin",
              *gin_args(SYN + SCORER_TINY + ["ScorerTrainer.num_epochs=8", "ScorerTrainer.patience=10",
                                             "ScorerTrainer.seed=7"])]
ONEREC_STEPS = ["OneRecTrainer.max_steps=20", "OneRecTrainer.eval_every_steps=4", "OneRecTrainer.eval_users=30",
                "OneRecTrainer.checkpoint_every_steps=2", "OneRecTrainer.seed=7", "OneRecTrainer.batch_size=8"]


def onerec_run(sid_dir: Path) -> list[str]:
    return ["--gin_file", "configs/synthetic/onerec.gin",
            *gin_args(SYN + ONEREC_TINY + ONEREC_STEPS + [f"train_onerec.semantic_ids_dir='{sid_dir}'"])]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A cache and the synthetic semantic-ID artifact the OneRec runs read."""
    root = tmp_path_factory.mktemp("resume")
    cache = root / "cache"
    sid = root / "sid"
    proc = run_script("train_rqvae.py", ["--gin_file", "configs/synthetic/rqkmeans.gin",
                                         *gin_args(SYN + SID_TINY), "--run_dir", str(sid)], cache)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "cache": cache, "sid": sid}


def _progress(run_dir: Path, key: str) -> int:
    """`key` ('epoch' or 'step') of the last checkpoint; -1 when there is none yet."""
    try:
        return int(json.loads((run_dir / "checkpoints" / "last.json").read_text())["state"][key])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def run_with_kills(script: str, args: list[str], run_dir: Path, cache: Path, seed: int, key: str,
                   unit: int, attempts: int = 4, max_delay: float = 0.05) -> list[str]:
    """Run to completion, SIGKILLing it up to `attempts` times; returns what happened per round.

    Round 0 kills at a random time after start; round r > 0 lets the run write 1 or 2 more
    checkpoints (`unit` = the checkpoint interval in `key` units), then kills it within `max_delay`
    seconds, i.e. somewhere in the next steps, evaluation or checkpoint write."""
    rng = random.Random(seed)
    log, killed = [], 0
    for round_ in range(attempts + 1):
        resume = (run_dir / "checkpoints" / "last.json").is_file()
        cmd = [sys.executable, f"scripts/{script}", *args, "--run_dir", str(run_dir)] + (["--resume"] if resume else [])
        start = _progress(run_dir, key)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(cache), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        if round_ < attempts:
            if round_ == 0:
                time.sleep(rng.uniform(0.5, 3.0))
            else:
                target = max(start, 0) + unit * rng.randint(1, 2)
                while proc.poll() is None and _progress(run_dir, key) < target:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, max_delay))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed += 1
                log.append(f"round {round_}: killed (resumed from {key} {start}); last checkpoint "
                           f"now at {key} {_progress(run_dir, key)}")
                continue
        err = proc.communicate(timeout=600)[1]
        assert proc.returncode == 0, f"round {round_} (resume={resume}) failed:\n{err[-3000:]}"
        log.append(f"round {round_}: finished (resumed from {key} {start})")
        break
    assert killed >= 3, f"only {killed} kills landed before the run finished: {log}"
    return log


def _test_metrics(results: dict) -> dict:
    return {proto: results["test"][proto] for proto in results["test"] if isinstance(results["test"][proto], dict)}


def assert_same_test_metrics(a: Path, b: Path) -> None:
    ra, rb = read_json(a / "results.json"), read_json(b / "results.json")
    ta, tb = _test_metrics(ra), _test_metrics(rb)
    assert ta.keys() == tb.keys() and ta
    for proto in ta:
        assert ta[proto].keys() == tb[proto].keys()
        for m in ta[proto]:
            assert abs(ta[proto][m] - tb[proto][m]) <= 1e-6, (proto, m, ta[proto][m], tb[proto][m])


def assert_no_leftovers(run_dir: Path) -> None:
    assert leftovers(run_dir) == []


def test_scorer_killed_three_times_resumes_to_the_uninterrupted_result(world):
    straight = world["root"] / "sasrec-straight"
    proc = run_script("train_sasrec.py", SCORER_RUN + ["--run_dir", str(straight)], world["cache"])
    assert proc.returncode == 0, proc.stderr
    crashed = world["root"] / "sasrec-crashed"
    log = run_with_kills("train_sasrec.py", SCORER_RUN, crashed, world["cache"], seed=11, key="epoch", unit=1)
    assert_same_test_metrics(straight, crashed)
    assert (read_json(crashed / "results.json")["training"]["best_epoch"]
            == read_json(straight / "results.json")["training"]["best_epoch"])
    a = load_tensors(straight / "checkpoints/best.safetensors")
    b = load_tensors(crashed / "checkpoints/best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), log
    assert_no_leftovers(crashed)


def test_onerec_killed_three_times_resumes_to_the_uninterrupted_result(world):
    straight = world["root"] / "onerec-straight"
    proc = run_script("train_onerec.py", onerec_run(world["sid"]) + ["--run_dir", str(straight)], world["cache"])
    assert proc.returncode == 0, proc.stderr
    crashed = world["root"] / "onerec-crashed"
    log = run_with_kills("train_onerec.py", onerec_run(world["sid"]), crashed, world["cache"], seed=12,
                         key="step", unit=2, max_delay=0.1)
    assert_same_test_metrics(straight, crashed)
    ra, rb = read_json(straight / "results.json"), read_json(crashed / "results.json")
    assert ra["training"]["best_step"] == rb["training"]["best_step"] and ra["training"]["steps"] == 20, log
    a = load_tensors(straight / "checkpoints/best.safetensors")
    b = load_tensors(crashed / "checkpoints/best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), log
    assert_no_leftovers(crashed)


# ---------------------------------------------------------------- numerical guard
def _finite_checkpoints(run_dir: Path) -> None:
    """Every checkpoint present loads and holds finite tensors; no temporary files are left."""
    for st in sorted((run_dir / "checkpoints").glob("*.safetensors")):
        tensors = load_tensors(st)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), st
        json.loads(st.with_suffix(".json").read_text())
    assert_no_leftovers(run_dir)


def test_scorer_nan_loss_names_the_step_and_keeps_the_last_finite_checkpoint(world):
    """lr = 1e30 with one batch per epoch: epoch 1 ends with huge but finite weights, the loss of
    epoch 2's first step is NaN."""
    run = world["root"] / "sasrec-nan"
    params = ["ScorerTrainer.lr=1e30", "ScorerTrainer.batch_size=64"]
    proc = run_script("train_sasrec.py", SCORER_RUN + gin_args(params) + ["--run_dir", str(run)], world["cache"])
    line = user_error_line(proc)
    assert line.startswith("error: training loss is nan at step 2 (epoch 2, batch 0); "), line
    assert read_json(run / "checkpoints/last.json")["state"]["epoch"] == 1
    assert not (run / "results.json").exists()
    _finite_checkpoints(run)


def test_onerec_nan_loss_names_the_step_and_keeps_only_finite_checkpoints(world):
    run = world["root"] / "onerec-nan"
    args = onerec_run(world["sid"]) + gin_args(["OneRecTrainer.lr=1e30", "OneRecTrainer.checkpoint_every_steps=1"])
    proc = run_script("train_onerec.py", args + ["--run_dir", str(run)], world["cache"])
    line = user_error_line(proc)
    # Either the loss itself or (finite loss, exploding gradients) the gradient norm is caught.
    assert line.startswith(("error: training loss is ", "error: gradient norm is ")), line
    assert " at step " in line, line
    step = int(line.split(" at step ")[1].split()[0])
    assert not (run / "results.json").exists()
    if step > 1:                                   # the checkpoints before the NaN step are kept, finite
        assert read_json(run / "checkpoints/last.json")["state"]["step"] == step - 1
        _finite_checkpoints(run)
    else:
        assert not run.exists()
