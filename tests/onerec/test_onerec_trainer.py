"""Training loop: exact resume, NaN detection, config checks, and the script end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import retrieval.data  # noqa: F401  (registers the dataset sources)
from onerec.trainer import OneRecTask, OneRecTrainer
from retrieval.core.trainer import lr_factor
from retrieval.data.registry import load_split
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator

from onerec_helpers import random_sids, tiny_model
from reliability_cases import user_error_line
from tiny_splits import make_split

REPO = Path(__file__).resolve().parents[2]
# 4 topics of ~15 items: with 20 topics of 3 items, users would exhaust their topics and lose
# every repeat (a user consumes an item once), leaving nobody after the 5-core.
SYN = ["SyntheticSource.num_users = 80", "SyntheticSource.num_items = 60",
       "SyntheticSource.mean_length = 8.0", "SyntheticSource.num_topics = 4"]


def _toy_split():
    rng = np.random.default_rng(0)
    train = [list(rng.integers(1, 31, size=rng.integers(3, 9))) for _ in range(30)]
    return make_split(train=train, valid=list(rng.integers(1, 31, 30)),
                      test=list(rng.integers(1, 31, 30)), num_items=30)


def _trainer(**kw):
    args = dict(batch_size=16, lr=3e-3, warmup_steps=3, num_epochs=2, eval_every_steps=5,
                eval_users=12, checkpoint_every_steps=3, log_every_steps=1, patience=50, seed=5,
                progress=False)
    args.update(kw)
    return OneRecTrainer(**args)


def _model(kind, sids, seed=0, beam_width=10):
    """A tiny generator of either kind (dropout on, so resume must restore the RNG)."""
    if kind == "tiger":
        return tiny_model(sids, seed=seed, beam_width=beam_width)
    from onerec.causal_generator import CausalSidGenerator
    torch.manual_seed(seed)
    return CausalSidGenerator(sids, d_model=16, num_layers=1, num_heads=2, head_hidden=16,
                              dropout=0.1, max_len=6, beam_width=beam_width)


KINDS = pytest.mark.parametrize("kind", ["causal", "tiger"])


def _evaluator():
    return Evaluator(ks=(5, 10), num_generated=10, batch_size=8, progress=False)


def _fit(trainer, model, split, run_dir, resume=False, crash_at=None):
    """Train through the one training loop; crash_at: raise KeyboardInterrupt after that step."""
    task = OneRecTask(trainer, model, split, _evaluator())
    if crash_at is not None:
        def after_step(step, out):
            if step == crash_at:
                raise KeyboardInterrupt
        task.after_step = after_step
    return trainer.run(task, run_dir, resume=resume)


def test_lr_schedule_by_hand():
    assert lr_factor(0, 4, "inverse_sqrt", 100) == pytest.approx(0.25)
    assert lr_factor(3, 4, "inverse_sqrt", 100) == pytest.approx(1.0)
    assert lr_factor(15, 4, "inverse_sqrt", 100) == pytest.approx(0.5)          # sqrt(4 / 16)
    assert lr_factor(3, 4, "cosine", 14) == pytest.approx(1.0)
    assert lr_factor(8, 4, "cosine", 14) == pytest.approx(0.5)                  # half way: cos(pi/2)
    with pytest.raises(RecError, match="schedule = 'linear' is unknown"):
        _trainer(schedule="linear")


@KINDS
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, kind):
    split = _toy_split()
    sids = random_sids(30, levels=2, codebook_size=4, seed=1)
    epochs = 2 if kind == "tiger" else 6           # causal: one window per user, 2 steps an epoch
    full = tmp_path / "full"
    _fit(_trainer(num_epochs=epochs), _model(kind, sids, seed=3), split, full)

    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):       # after the step-6 checkpoint and the step-5 evaluation
        _fit(_trainer(num_epochs=epochs), _model(kind, sids, seed=3), split, crashed, crash_at=7)
    assert json.loads((crashed / "checkpoints/last.json").read_text())["state"]["step"] == 6
    _fit(_trainer(num_epochs=epochs), _model(kind, sids, seed=99), split, crashed, resume=True)
    for name in ("last", "best"):
        a = load_file(str(full / f"checkpoints/{name}.safetensors"))
        b = load_file(str(crashed / f"checkpoints/{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("targets_per_s", "train_seconds")}
                        for r in rs]
    read = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(read(full)) == strip(read(crashed))


def test_model_decodes_what_teacher_forcing_taught_it():
    """Memorise a tiny catalogue's transitions (item i -> i+1); beam search must return exactly the
    trained next item first, which checks decoder inputs, labels and decoding line up."""
    from onerec.sequences import TrainingSamples
    from retrieval.data.batch import right_aligned
    from retrieval.data.batch import HistoryBatch
    N = 24
    train = [[(u + k) % N + 1 for k in range(6)] for u in range(48)]
    split = make_split(train, [1] * 48, [1] * 48, N)
    model = tiny_model(random_sids(N, levels=2, codebook_size=4, seed=0), seed=0, beam_width=5,
                       d_model=32, d_ff=64, num_user_tokens=0, dropout=0.0)
    samples = TrainingSamples(split)
    batch = samples.batch(np.arange(len(samples)), model.tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(120):
        loss = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    hist = torch.from_numpy(right_aligned(split.train_items, samples.starts, samples.ends, 20))
    top = model.generate(HistoryBatch(batch.users, hist, torch.zeros_like(hist)), 5)
    assert torch.equal(top[:, 0], batch.targets)


@KINDS
def test_nan_loss_names_the_step(tmp_path, kind):
    split = _toy_split()
    model = _model(kind, random_sids(30, levels=2, codebook_size=4))
    with torch.no_grad():
        (model.t5.shared.weight if kind == "tiger" else model.code_emb.weight).fill_(float("nan"))
    with pytest.raises(RecError, match=r"training loss is nan at step 1 \(epoch 1, batch 0\)"):
        _fit(_trainer(), model, split, tmp_path / "run")


def test_checkpoint_from_another_config_is_refused(tmp_path):
    split = _toy_split()
    sids = random_sids(30, levels=2, codebook_size=4)
    _fit(_trainer(num_epochs=1), tiny_model(sids, beam_width=10), split, tmp_path)
    with pytest.raises(RecError, match="checkpoint has batch_size = 16 but this config has 8"):
        _fit(_trainer(batch_size=8), tiny_model(sids, beam_width=10), split, tmp_path, resume=True)


# ---- the script, in a subprocess -------------------------------------------------------------

@pytest.fixture
def synthetic_sids(tmp_path):
    """A semantic-ID artifact for the small synthetic split the script tests use."""
    gin.clear_config()
    gin.parse_config(["load_split.name = 'synthetic'"] + SYN)
    split = load_split()
    gin.clear_config()
    sids = random_sids(split.num_items, levels=2, codebook_size=8, seed=0,
                       fingerprint=split.fingerprint)
    sids.save(tmp_path / "sids")
    return tmp_path / "sids"


def _script(run_dir, sids_dir, *params, resume=False):
    cmd = [sys.executable, str(REPO / "scripts/train_onerec.py"),
           "--gin_file", "configs/synthetic/onerec-tiger.gin", "--run_dir", str(run_dir),
           "--gin_param", f"train_onerec.semantic_ids_dir = '{sids_dir}'",
           "--gin_param", "OneRecModel.d_model = 16", "--gin_param", "OneRecModel.d_ff = 32",
           "--gin_param", "OneRecModel.num_heads = 2", "--gin_param", "OneRecModel.d_kv = 8",
           "--gin_param", "OneRecModel.num_layers = 1", "--gin_param", "OneRecModel.num_decoder_layers = 1",
           "--gin_param", "OneRecTrainer.max_steps = 4", "--gin_param", "OneRecTrainer.batch_size = 64",
           "--gin_param", "OneRecTrainer.progress = False", "--gin_param", "Evaluator.progress = False",
           "--gin_param", "OneRecTrainer.log_every_steps = 2", "--gin_param", "OneRecTrainer.num_threads = 1"]
    for p in SYN + list(params):
        cmd += ["--gin_param", p]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_script_trains_evaluates_and_refuses_a_changed_config(tmp_path, synthetic_sids):
    run = tmp_path / "run"
    proc = _script(run, synthetic_sids)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((run / "results.json").read_text())
    assert res["protocol"]["ks"] == [5, 10, 20, 50] and res["protocol"]["beam_width"] == 50
    assert res["valid"]["num_users"] == res["test"]["num_users"] == res["dataset"]["counts"]["users"]
    assert res["model"] == "onerec" and res["params"]["num_parameters"] > 0
    ranks = load_file(str(run / "ranks.safetensors"))
    assert ranks["onerec/test/full"].shape == (res["test"]["num_users"],)
    assert set(res["test"]["full"]) >= {"ndcg@10", "hr@10", "ndcg@50"}
    assert res["training"]["steps"] == 4
    kinds = [json.loads(x)["kind"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "train" in kinds and "eval" in kinds
    assert (run / "config.gin").is_file()

    assert "already holds a checkpoint; pass --resume" in user_error_line(_script(run, synthetic_sids))
    changed = _script(run, synthetic_sids, "OneRecModel.d_ff = 64", resume=True)
    assert "checkpoint has model = " in user_error_line(changed)
    assert (run / "results.json").is_file()                     # an existing run is left alone


def test_a_missing_artifact_binding_is_a_clear_error(tmp_path):
    from onerec.pipeline import train_onerec
    with pytest.raises(RecError, match="train_onerec.semantic_ids_dir is not set"):
        train_onerec(tmp_path)


@pytest.mark.slow
def test_script_refuses_semantic_ids_of_another_dataset(tmp_path):
    sids = random_sids(50, levels=2, codebook_size=8, fingerprint="0123456789abcdef")
    sids.save(tmp_path / "other")
    run = tmp_path / "run"
    assert "built for another dataset or split" in user_error_line(_script(run, tmp_path / "other"))
    assert not run.exists()


@pytest.mark.slow
def test_script_refuses_a_beam_narrower_than_k(tmp_path, synthetic_sids):
    run = tmp_path / "run"
    line = user_error_line(_script(run, synthetic_sids, "OneRecModel.beam_width = 20"))
    assert "OneRecModel.beam_width=20 is smaller than the largest cut-off K=50" in line
    assert not run.exists()


@pytest.mark.parametrize("dataset", ["amazon-beauty", "ml-latest-small", "ml-25m", "synthetic"])
@pytest.mark.parametrize("config,kind", [("onerec", "parallel"), ("onerec-causal", "causal"),
                                         ("onerec-tiger", "tiger")])
def test_frozen_configs_parse_and_keep_the_protocol(dataset, config, kind, monkeypatch):
    import onerec.pipeline  # noqa: F401  (registers the configurables)
    from retrieval.evaluation import Evaluator as Ev
    from onerec.generators import generator_kind, make_generator
    monkeypatch.chdir(REPO)
    gin.clear_config()
    gin.parse_config_file(f"configs/{dataset}/{config}.gin")
    try:
        ev = Ev()
        assert ev.ks == (5, 10, 20, 50) and ev.num_generated == 50 and ev.exclude_history
        assert gin.query_parameter("make_generator.kind") == kind
        assert gin.query_parameter("load_split.name") == dataset
        model = make_generator(random_sids(20, levels=3, codebook_size=4))
        assert generator_kind(model) == kind
        assert model.beam_width == 50 and model.exclude_history
        if kind == "parallel":                # the default: catalogue softmax over OPQ IDs
            assert model.objective == "items" and model.temperature == 0.07
            assert gin.query_parameter("train_onerec.semantic_ids_dir").endswith("-opq")
    finally:
        gin.clear_config()
