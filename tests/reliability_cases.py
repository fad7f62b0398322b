"""The bad-input cases of the reliability suite: tiny inputs, the case table and a runner.

Every case runs one command-line script as a user would (a subprocess, from the repo root) on tiny
inputs that `build_world` makes once, and expects exit status 2 with exactly one line on stderr
containing `expect`. tests/reliability/test_script_bad_input.py asserts them;

    python tests/reliability_cases.py          # prints the markdown table of docs/reliability.md

runs them all once and prints each case with the exact message its script printed.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ML_SMALL = REPO.parent / "shared" / "data" / "movielens-latest-small"   # the real files, for copies

# 4 topics: since synthetic users consume an item at most once (commit 1a1844b), 60 users x 40 items
# with the default 20 topics leave nobody after the 5-core; 4 topics keep ~250 interactions.
SYN = ["SyntheticSource.num_users=60", "SyntheticSource.num_items=40", "SyntheticSource.mean_length=8.0",
       "SyntheticSource.num_topics=4"]
# The tiny MovieLens-format copy (see write_tiny_movielens) instead of the real data.
ML_DATA = ["load_split.name='ml-latest-small'", "MovieLensLatestSmallSource.num_tags=0"]
SCORER_TINY = ["ScorerTrainer.num_epochs=2", "ScorerTrainer.eval_every=1", "ScorerTrainer.batch_size=16",
               "ScorerTrainer.progress=False", "ScorerTrainer.num_threads=1", "SequentialScorer.hidden=8",
               "SequentialScorer.maxlen=10", "SequentialScorer.num_blocks=1", "Evaluator.progress=False"]
SID_TINY = ["make_tokenizer.name='rqkmeans'", "make_tokenizer.levels=2", "make_tokenizer.codebook_size=4",
            "item_embeddings.source='collaborative'", "item_embeddings.dim=8"]
ONEREC_TINY = ["ParallelSidGenerator.d_model=16", "ParallelSidGenerator.num_heads=2",
               "ParallelSidGenerator.num_layers=1", "ParallelSidGenerator.max_len=10", "OneRecTrainer.max_steps=4", "OneRecTrainer.batch_size=16",
               "OneRecTrainer.warmup_steps=2", "OneRecTrainer.checkpoint_every_steps=2",
               "OneRecTrainer.progress=False", "Evaluator.progress=False"]
AMBIGUOUS_TITLE = "Twin Peaks (1990)"
EXIT_USER_ERROR = 2


def gin_args(params: list[str]) -> list[str]:
    return [a for p in params for a in ("--gin_param", p)]


def env(cache: Path) -> dict:
    return {**os.environ, "SEMID_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore"}


def run_script(script: str, args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=REPO, env=env(cache),
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- tiny inputs, built once
def write_tiny_movielens(folder: Path, seed: int = 0) -> Path:
    """A MovieLens-CSV folder (ratings.csv, movies.csv) of 60 users x 40 movies, 8-14 ratings each,
    in which movies 7 and 21 have the same title (AMBIGUOUS_TITLE) and every user rates both."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    titles = [f"Movie {m} ({1990 + m % 20})" for m in range(1, 41)]
    titles[6] = titles[20] = AMBIGUOUS_TITLE
    genres = ["Drama", "Comedy", "Action|Thriller", "Animation|Children"]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{m},{t},{genres[m % 4]}\n" for m, t in enumerate(titles, 1)))
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, 61):
        items = rng.choice(np.setdiff1d(np.arange(1, 41), [7, 21]), size=rng.integers(6, 12), replace=False)
        items = rng.permutation(np.concatenate([items, [7, 21]]))
        rows += [f"{u},{m},{rng.integers(1, 6)}.0,{1_000_000 + 100 * u + t}" for t, m in enumerate(items)]
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


def text_table(num_users: int = 40, num_items: int = 25, length: int = 8, seed: int = 0,
               with_time: bool = True) -> str:
    """A valid `user item [timestamp]` file: every user has `length` distinct items."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, num_users + 1):
        for t, i in enumerate(rng.choice(np.arange(1, num_items + 1), size=length, replace=False)):
            lines.append(f"{u} {i} {1000 + 10 * t}" if with_time else f"{u} {i}")
    return "\n".join(lines) + "\n"


@dataclass
class World:
    """Paths of the inputs the cases share."""

    root: Path
    cache: Path
    text: dict[str, Path]
    ml: dict[str, Path]          # MovieLens-format folders: 'tiny' (valid) and broken copies
    sid_ml: Path                 # semantic-ID artifact of the tiny MovieLens copy
    onerec: Path                 # finished OneRec run on the tiny MovieLens copy
    scorer: Path                 # finished SASRec run on tiny synthetic data
    batch: dict[str, Path]
    gin: dict[str, Path]         # broken gin files
    emb: dict[str, Path]         # broken item_embeddings npy files


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"building {what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def build_world(root: Path) -> World:
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "cache"
    t = root / "text"
    t.mkdir()
    good = text_table()
    files = {
        "good": good,
        "comma": good.replace(" ", ","),
        "one_column": "".join(line.split()[0] + "\n" for line in good.splitlines()),
        "non_numeric": good.replace("\n7 ", "\nuser7 ", 1),
        "empty": "",
        "truncated": good + "41 3",                             # last line cut before its timestamp
        "duplicated": good + good,                              # every row twice (same timestamps)
        "single": "".join(f"{u} {u % 9 + 1} {100 + u}\n" for u in range(1, 50)),   # one event per user
        "no_time": text_table(with_time=False),
    }
    text = {}
    for name, content in files.items():
        text[name] = t / f"{name}.txt"
        text[name].write_text(content)

    ml = {"tiny": write_tiny_movielens(root / "ml" / "tiny")}
    for name in ("no_timestamp", "semicolon", "no_title", "no_ratings"):
        d = root / "ml" / name
        d.mkdir(parents=True)
        for f in ("ratings.csv", "movies.csv"):
            shutil.copyfile(ML_SMALL / f, d / f)
        ml[name] = d
    _rewrite_header(ml["no_timestamp"] / "ratings.csv", "userId,movieId,rating,timestamp",
                    "userId,movieId,rating,time")
    _rewrite_all(ml["semicolon"] / "ratings.csv", ",", ";")
    _rewrite_header(ml["no_title"] / "movies.csv", "movieId,title,genres", "movieId,name,genres")
    (ml["no_ratings"] / "ratings.csv").unlink()

    ml_params = ML_DATA + [f"MovieLensLatestSmallSource.path='{ml['tiny']}'"]
    sid_ml = root / "sid-ml"
    _check(run_script("train_rqvae.py", ["--gin_file", "configs/ml-latest-small/rqkmeans.gin",
                                         *gin_args(ml_params + SID_TINY), "--run_dir", str(sid_ml)],
                      cache), "the semantic IDs")
    onerec = root / "onerec-ml"
    _check(run_script("train_onerec.py", onerec_args(ml_params, sid_ml, onerec), cache), "the OneRec run")
    scorer = root / "sasrec-syn"
    _check(run_script("train_sasrec.py", scorer_args(scorer), cache), "the SASRec run")

    b = root / "batch"
    b.mkdir()
    batch = {"empty_history": b / "empty.jsonl", "not_json": b / "bad.jsonl"}
    batch["empty_history"].write_text(json.dumps({"items": []}) + "\n")
    batch["not_json"].write_text('{"items": ["1"]}\n{"items": [1, 2\n')
    for name, line in (("good", {"items": ["1"]}), ("items_number", {"items": 5}),
                       ("titles_numbers", {"titles": [1]}), ("items_string", {"items": "123"})):
        batch[name] = b / f"{name}.jsonl"
        batch[name].write_text(json.dumps(line) + "\n")
    batch["latin1"] = b / "latin1.jsonl"
    batch["latin1"].write_bytes('{"titles": ["Amélie (2001)"]}\n'.encode("latin-1"))

    g = root / "gin"
    g.mkdir()
    gin_files = {"missing_include": g / "missing-include.gin"}
    gin_files["missing_include"].write_text("include 'configs/synthetic/nope.gin'\n")
    e = root / "emb"
    e.mkdir()
    emb = {"npz": e / "emb.npz", "no_columns": e / "no-columns.npy"}
    np.savez(emb["npz"], x=np.zeros((33, 4), dtype=np.float32))
    np.save(emb["no_columns"], np.zeros((33, 0), dtype=np.float32))
    return World(root, cache, text, ml, sid_ml, onerec, scorer, batch, gin_files, emb)


def _rewrite_header(path: Path, old: str, new: str) -> None:
    data = path.read_text(encoding="utf-8")
    assert data.startswith(old), path
    path.write_text(new + data[len(old):], encoding="utf-8")


def _rewrite_all(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def onerec_args(data_params: list[str], sid_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--gin_file", "configs/ml-latest-small/onerec.gin",
            *gin_args(data_params + ONEREC_TINY + [f"train_onerec.semantic_ids_dir='{sid_dir}'", *extra]),
            "--run_dir", str(run_dir)]


def scorer_args(run_dir: Path, *extra: str, config: str = "configs/synthetic/sasrec-bce.gin") -> list[str]:
    return ["--gin_file", config, *gin_args(SYN + SCORER_TINY + list(extra)), "--run_dir", str(run_dir)]


def ml_params(w: World, folder: str = "tiny") -> list[str]:
    return ML_DATA + [f"MovieLensLatestSmallSource.path='{w.ml[folder]}'"]


# ---------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """`args(world, run_dir)` -> the script's arguments. `prepare(world, run_dir)` may put files in
    run_dir first (a run to resume); such a run_dir must be left byte-identical."""

    name: str
    script: str
    what: str                     # the bad input, for the docs table
    args: Callable[[World, Path], list[str]]
    expect: str                   # a substring of the one stderr line
    prepare: Callable[[World, Path], None] | None = None


def _text(w: World, name: str) -> list[str]:
    return gin_args(["load_split.name='text'", f"TextSource.path='{w.text[name]}'"])


def _prep(script_args: Callable[[World], list[str]]):
    """Arguments of prepare_data.py with the data.gin of synthetic plus `script_args`."""
    return lambda w, rd: ["--gin_file", "configs/synthetic/data.gin", *script_args(w), "--run_dir", str(rd)]


def _sasrec(*params: str, config: str = "configs/synthetic/sasrec-bce.gin"):
    return lambda w, rd: scorer_args(rd, *params, config=config)


def _onerec(*params: str, data: str = "ml", sid: str | None = None):
    """train_onerec.py on the tiny MovieLens copy (or synthetic data) with the MovieLens artifact
    (or the folder `sid` under the world root)."""
    def args(w: World, rd: Path) -> list[str]:
        data_params = SYN + ["load_split.name='synthetic'"] if data == "synthetic" else ml_params(w)
        return onerec_args(data_params, w.sid_ml if sid is None else w.root / sid, rd, *params)
    return args


def _rqvae(*params: str):
    return lambda w, rd: ["--gin_file", "configs/synthetic/rqkmeans.gin",
                          *gin_args(SYN + SID_TINY + list(params)), "--run_dir", str(rd)]


def _baseline(*params: str):
    return lambda w, rd: ["--gin_file", "configs/synthetic/baseline.gin", *gin_args(SYN + list(params)),
                          "--run_dir", str(rd)]


def _compare(*params: str):
    return lambda w, rd: ["--gin_file", "configs/synthetic/compare.gin", *gin_args(SYN + list(params)),
                          "--run_dir", str(rd)]


def _recommend(*args: str):
    return lambda w, rd: ["--onerec_run", str(w.onerec), *[a.format(batch=w.batch) if "{" in a else a
                                                          for a in args]]


def _copy_run(source: str, damage: Callable[[Path], None] | None = None):
    """prepare(): copy a finished run's checkpoints (only) into run_dir, then damage them."""
    def prepare(w: World, rd: Path) -> None:
        src = {"onerec": w.onerec, "scorer": w.scorer}[source]
        shutil.copytree(src / "checkpoints", rd / "checkpoints")
        if damage is not None:
            damage(rd / "checkpoints")
    return prepare


def _truncate(name: str, keep: float = 0.5):
    def damage(ck: Path) -> None:
        p = ck / name
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    return damage


def _garble(name: str):
    def damage(ck: Path) -> None:
        p = ck / name
        data = bytearray(p.read_bytes())
        data[:8] = b"\xff" * 8                 # the safetensors header length: now absurd
        p.write_bytes(bytes(data))
    return damage


def _sid_copy(damage: Callable[[Path], None]):
    """prepare(): a damaged copy of the MovieLens semantic-ID artifact in run_dir/../sid-<case>."""
    def prepare(w: World, rd: Path) -> None:
        dst = rd.parent / f"sid-{rd.name}"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(w.sid_ml, dst)
        damage(dst)
    return prepare


def _onerec_damaged_sid(*params: str):
    return lambda w, rd: onerec_args(ml_params(w), rd.parent / f"sid-{rd.name}", rd, *params)


def _write_json_file(name: str, value) -> Callable[[Path], None]:
    def damage(ck: Path) -> None:
        (ck / name).write_text(json.dumps(value))
    return damage


def _edit_rng(ck: Path) -> None:
    p = ck / "last.json"
    meta = json.loads(p.read_text())
    meta["rng"]["python"] = "(3, (1, 2, 3"                 # cut mid-tuple: not a Python literal
    p.write_text(json.dumps(meta))


def _file_at(w: World, rd: Path) -> None:
    """prepare(): a plain file where the run directory should be."""
    rd.parent.mkdir(parents=True, exist_ok=True)
    rd.write_text("not a folder\n")


_HELD: list[int] = []         # lock files held by this (test) process for the rest of the session


def _locked_by_another_writer(w: World, rd: Path) -> None:
    """prepare(): run_dir exists and another process (this one) holds its lock, as a running
    script does (retrieval/core/run_lock.py)."""
    rd.mkdir(parents=True)
    fd = os.open(rd / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    _HELD.append(fd)


def _onerec_run_without_sid_entry(w: World, rd: Path) -> None:
    """prepare(): a copy of the finished OneRec run whose results.json lacks 'semantic_ids'."""
    shutil.copytree(w.onerec, rd)
    res = json.loads((rd / "results.json").read_text())
    res.pop("semantic_ids", None)
    (rd / "results.json").write_text(json.dumps(res))


def _json_edit(edit: Callable[[dict], dict]):
    def damage(d: Path) -> None:
        p = d / "semantic_ids.json"
        p.write_text(json.dumps(edit(json.loads(p.read_text()))))
    return damage


CASES: list[Case] = [
    # -- data files of the 'text' source (prepare_data.py)
    Case("text-comma-separated", "prepare_data.py", "text file with commas instead of spaces",
         _prep(lambda w: _text(w, "comma")), "expected 2 or 3 whitespace-separated columns"),
    Case("text-missing-column", "prepare_data.py", "text file with only a user column",
         _prep(lambda w: _text(w, "one_column")), "found 1 on the first line"),
    Case("text-non-numeric-id", "prepare_data.py", "text file with user id 'user7'",
         _prep(lambda w: _text(w, "non_numeric")), "'user7 "),
    Case("text-empty-file", "prepare_data.py", "empty text file",
         _prep(lambda w: _text(w, "empty")), "the file is empty"),
    Case("text-truncated-last-line", "prepare_data.py", "last line cut before its timestamp",
         _prep(lambda w: _text(w, "truncated")), "truncated.txt: line "),
    Case("text-single-interaction-users", "prepare_data.py", "every user has one interaction",
         _prep(lambda w: _text(w, "single")), "no user has >= 3 interactions"),
    Case("text-path-unset", "prepare_data.py", "dataset 'text' without TextSource.path",
         _prep(lambda w: gin_args(["load_split.name='text'"])), "bind TextSource.path"),
    Case("text-file-missing", "prepare_data.py", "TextSource.path names no file",
         _prep(lambda w: gin_args(["load_split.name='text'", f"TextSource.path='{w.root}/nope.txt'"])),
         "nope.txt not found"),
    # -- MovieLens CSV copies with damaged files
    Case("ml-missing-column", "prepare_data.py", "ratings.csv header without 'timestamp'",
         _prep(lambda w: gin_args(ml_params(w, "no_timestamp"))), "missing timestamp"),
    Case("ml-wrong-separator", "prepare_data.py", "ratings.csv separated by ';'",
         _prep(lambda w: gin_args(ml_params(w, "semicolon"))), "comma-separated columns"),
    Case("ml-bad-movies-header", "prepare_data.py", "movies.csv header 'movieId,name,genres'",
         _prep(lambda w: gin_args(ml_params(w, "no_title"))), "missing title"),
    Case("ml-missing-file", "prepare_data.py", "folder without ratings.csv",
         _prep(lambda w: gin_args(ml_params(w, "no_ratings"))), "ratings.csv not found"),
    # -- gin keys and values
    Case("gin-unknown-configurable", "prepare_data.py", "SyntheticSourse.num_users=60 (typo)",
         _prep(lambda w: gin_args(["SyntheticSourse.num_users=60"])), "SyntheticSourse"),
    Case("gin-unknown-parameter", "train_sasrec.py", "SequentialScorer.hiden=8 (typo)",
         _sasrec("SequentialScorer.hiden=8"), "hiden"),
    Case("gin-wrong-type", "train_sasrec.py", "SequentialScorer.maxlen='abc'",
         _sasrec("SequentialScorer.maxlen='abc'"), "maxlen"),
    Case("gin-zero-maxlen", "train_sasrec.py", "SequentialScorer.maxlen=0",
         _sasrec("SequentialScorer.maxlen=0"), "SequentialScorer.maxlen = 0 must be > 0"),
    Case("gin-syntax-error", "train_sasrec.py", "binding 'ScorerTrainer.lr = ' without a value",
         _sasrec("ScorerTrainer.lr = "), f"Unable to parse value. (line {len(SYN) + len(SCORER_TINY) + 1}) in --gin_param 'ScorerTrainer.lr ='"),
    Case("gin-file-missing", "evaluate_baseline.py", "--gin_file names no file",
         lambda w, rd: ["--gin_file", "configs/synthetic/baseline-typo.gin", "--run_dir", str(rd)],
         "baseline-typo.gin not found"),
    Case("gin-negative-lr", "train_sasrec.py", "ScorerTrainer.lr=-1",
         _sasrec("ScorerTrainer.lr=-1"), "ScorerTrainer.lr = -1 must be > 0"),
    # -- unknown names
    Case("unknown-dataset", "prepare_data.py", "load_split.name='ml-26m'",
         _prep(lambda w: gin_args(["load_split.name='ml-26m'"])), "unknown dataset 'ml-26m'"),
    Case("unknown-loss", "train_sasrec.py", "ScorerLoss.name='focal'",
         _sasrec("ScorerLoss.name='focal'"), "unknown loss 'focal'"),
    Case("unknown-negative-sampler", "train_sasrec.py", "build_negative_sampler.name='hardest'",
         _sasrec("build_negative_sampler.name='hardest'"), "unknown negative sampler 'hardest'"),
    Case("unknown-similarity", "train_sasrec.py", "make_similarity.name='euclid'",
         _sasrec("make_similarity.name='euclid'"), "euclid"),
    Case("unknown-tokenizer", "train_rqvae.py", "make_tokenizer.name='vqvae'",
         _rqvae("make_tokenizer.name='vqvae'"), "make_tokenizer.name = 'vqvae' is unknown"),
    Case("unknown-embedding-source", "train_rqvae.py", "item_embeddings.source='clip'",
         _rqvae("item_embeddings.source='clip'"), "item_embeddings.source = 'clip' is unknown"),
    Case("codebook-larger-than-catalogue", "train_rqvae.py", "make_tokenizer.codebook_size=64 for 33 items",
         _rqvae("make_tokenizer.codebook_size=64"), "64"),
    Case("unknown-baseline", "evaluate_baseline.py", "evaluate_baseline.model=['pop']",
         _baseline("evaluate_baseline.model=['pop']"), "unknown baseline 'pop'"),
    Case("evaluator-empty-ks", "evaluate_baseline.py", "Evaluator.ks=()",
         _baseline("Evaluator.ks=()"), "Evaluator.ks=()"),
    Case("compare-missing-model-config", "compare.py", "Comparison.scorers names a missing gin file",
         _compare("Comparison.scorers={'sasrec-x': ['configs/synthetic/sasrec-x.gin']}"),
         "sasrec-x.gin (model 'sasrec-x') not found"),
    Case("compare-generative-without-ids", "compare.py", "Comparison.semantic_ids=[] with a generative model",
         _compare("Comparison.semantic_ids=[]"), "Comparison.generative needs Comparison.semantic_ids"),
    # -- artifacts and checkpoints
    Case("sid-other-dataset", "train_onerec.py", "MovieLens semantic IDs given to a synthetic run",
         _onerec(data="synthetic"), "built for another dataset or split"),
    Case("sid-dir-missing", "train_onerec.py", "train_onerec.semantic_ids_dir names no run",
         _onerec(sid="no-such-sid-dir"), "semantic_ids.safetensors not found"),
    Case("sid-json-truncated", "train_onerec.py", "semantic_ids.json cut in half",
         _onerec_damaged_sid(), "not valid JSON",
         prepare=_sid_copy(_truncate("semantic_ids.json"))),
    Case("sid-json-missing-key", "train_onerec.py", "semantic_ids.json without 'codebook_size'",
         _onerec_damaged_sid(), "codebook_size",
         prepare=_sid_copy(_json_edit(lambda m: {k: v for k, v in m.items() if k != "codebook_size"}))),
    Case("sid-safetensors-truncated", "train_onerec.py", "semantic_ids.safetensors cut in half",
         _onerec_damaged_sid(), "cannot read safetensors",
         prepare=_sid_copy(_truncate("semantic_ids.safetensors"))),
    Case("beam-narrower-than-k", "train_onerec.py", "ParallelSidGenerator.beam_width=20 < K=50",
         _onerec("ParallelSidGenerator.beam_width=20"),
         "ParallelSidGenerator.beam_width=20 is smaller than the largest cut-off K=50"),
    Case("onerec-resume-without-checkpoint", "train_onerec.py", "--resume on an empty run_dir",
         lambda w, rd: _onerec()(w, rd) + ["--resume"], "--resume given but"),
    Case("onerec-resume-truncated-checkpoint", "train_onerec.py", "--resume from a truncated last.safetensors",
         lambda w, rd: _onerec()(w, rd) + ["--resume"], "cannot read safetensors",
         prepare=_copy_run("onerec", _truncate("last.safetensors"))),
    Case("onerec-resume-garbled-checkpoint", "train_onerec.py", "--resume from last.safetensors with a garbled header",
         lambda w, rd: _onerec()(w, rd) + ["--resume"], "cannot read safetensors",
         prepare=_copy_run("onerec", _garble("last.safetensors"))),
    Case("onerec-existing-run", "train_onerec.py", "a run_dir holding a checkpoint, without --resume",
         _onerec(), "already holds a checkpoint; pass --resume", prepare=_copy_run("onerec")),
    Case("sasrec-resume-truncated-checkpoint", "train_sasrec.py", "--resume from a truncated last.safetensors",
         lambda w, rd: _sasrec()(w, rd) + ["--resume"], "cannot read safetensors",
         prepare=_copy_run("scorer", _truncate("last.safetensors"))),
    Case("sasrec-resume-corrupt-json", "train_sasrec.py", "--resume from a truncated last.json",
         lambda w, rd: _sasrec()(w, rd) + ["--resume"], "not valid JSON",
         prepare=_copy_run("scorer", _truncate("last.json"))),
    Case("sasrec-resume-other-variant", "train_sasrec.py", "--resume a SASRec checkpoint with the TiSASRec config",
         lambda w, rd: _sasrec(config="configs/synthetic/tisasrec-bce.gin")(w, rd) + ["--resume"],
         "checkpoint has variant = sasrec but this config has tisasrec", prepare=_copy_run("scorer")),
    Case("missing-run-dir", "train_sasrec.py", "no --run_dir",
         lambda w, rd: _sasrec()(w, rd)[:-2], "--run_dir is required"),
    # -- recommend.py on a finished OneRec run
    Case("recommend-empty-history", "recommend.py", 'batch line {"items": []}',
         _recommend("--batch", "{batch[empty_history]}"), "the history is empty"),
    Case("recommend-unknown-item", "recommend.py", "--items 99999",
         _recommend("--items", "99999"), "unknown item id '99999'"),
    Case("recommend-unknown-title", "recommend.py", "--titles 'Twin Peaks (1999)'",
         _recommend("--titles", "Twin Peaks (1999)"), "no item titled 'Twin Peaks (1999)'"),
    Case("recommend-ambiguous-title", "recommend.py", f"--titles '{AMBIGUOUS_TITLE.lower()}' (two movies)",
         _recommend("--titles", AMBIGUOUS_TITLE.lower()), "is ambiguous (2 items: ids 7, 21)"),
    Case("recommend-unknown-user", "recommend.py", "--user 99999",
         _recommend("--user", "99999"), "unknown user id '99999'"),
    Case("recommend-k-zero", "recommend.py", "--k 0",
         _recommend("--items", "1", "--k", "0"), "k must be >= 1"),
    Case("recommend-bad-batch-json", "recommend.py", "batch file with a broken JSON line",
         _recommend("--batch", "{batch[not_json]}"), "bad.jsonl:2: not valid JSON"),
    Case("recommend-not-a-run", "recommend.py", "--onerec_run pointing at a semantic-ID run",
         lambda w, rd: ["--onerec_run", str(w.sid_ml), "--items", "1"], "is not a finished"),
    # -- issue 17: gin values checked where they are read, naming the binding
    Case("gin-batch-size-string", "train_sasrec.py", "ScorerTrainer.batch_size='abc'",
         _sasrec("ScorerTrainer.batch_size='abc'"), "ScorerTrainer.batch_size = 'abc' must be an integer >= 1"),
    Case("gin-batch-size-float", "train_sasrec.py", "ScorerTrainer.batch_size=2.5",
         _sasrec("ScorerTrainer.batch_size=2.5"), "ScorerTrainer.batch_size = 2.5 must be an integer >= 1"),
    Case("gin-lr-string", "train_sasrec.py", "ScorerTrainer.lr='abc'",
         _sasrec("ScorerTrainer.lr='abc'"), "ScorerTrainer.lr = 'abc' must be a number > 0"),
    Case("gin-eval-users-negative", "train_sasrec.py", "ScorerTrainer.eval_users=-1",
         _sasrec("ScorerTrainer.eval_users=-1"), "ScorerTrainer.eval_users = -1 must be >= 0"),
    Case("gin-k-core-string", "prepare_data.py", "load_split.k_core='abc'",
         _prep(lambda w: gin_args(["load_split.k_core='abc'"])), "load_split.k_core = 'abc' must be an integer >= 0"),
    Case("gin-zero-users", "prepare_data.py", "SyntheticSource.num_users=0",
         _prep(lambda w: gin_args(["SyntheticSource.num_users=0"])), "SyntheticSource.num_users = 0 must be >= 1"),
    Case("gin-negative-users", "prepare_data.py", "SyntheticSource.num_users=-5",
         _prep(lambda w: gin_args(["SyntheticSource.num_users=-5"])), "SyntheticSource.num_users = -5 must be >= 1"),
    Case("gin-onerec-batch-size-zero", "train_onerec.py", "OneRecTrainer.batch_size=0",
         _onerec("OneRecTrainer.batch_size=0"), "OneRecTrainer.batch_size = 0 must be >= 1"),
    Case("gin-onerec-batch-size-negative", "train_onerec.py", "OneRecTrainer.batch_size=-4",
         _onerec("OneRecTrainer.batch_size=-4"), "OneRecTrainer.batch_size = -4 must be >= 1"),
    Case("gin-codebook-size-string", "train_rqvae.py", "make_tokenizer.codebook_size='abc'",
         _rqvae("make_tokenizer.codebook_size='abc'"), "make_tokenizer.codebook_size = 'abc' must be an integer >= 2"),
    Case("gin-ks-not-integers", "evaluate_baseline.py", "Evaluator.ks=('a',)",
         _baseline("Evaluator.ks=('a',)"), "Evaluator.ks=('a',): give one or more positive integer cut-offs"),
    Case("gin-undefined-macro", "train_sasrec.py", "ScorerTrainer.lr=%NOPE (no such macro)",
         _sasrec("ScorerTrainer.lr=%NOPE"), "macro %NOPE is not defined"),
    Case("gin-missing-include", "evaluate_baseline.py", "a gin file including a missing file",
         lambda w, rd: ["--gin_file", str(w.gin["missing_include"]), "--run_dir", str(rd)],
         "Unable to open file: configs/synthetic/nope.gin"),
    # -- item embeddings from a user's file
    Case("npy-path-is-npz", "train_rqvae.py", "item_embeddings.npy_path names a .npz archive",
         lambda w, rd: _rqvae("item_embeddings.source='npy'", f"item_embeddings.npy_path='{w.emb['npz']}'")(w, rd),
         "a .npz archive (arrays: x), not a .npy matrix"),
    Case("npy-no-columns", "train_rqvae.py", "item_embeddings npy of shape (33, 0)",
         lambda w, rd: _rqvae("item_embeddings.source='npy'", f"item_embeddings.npy_path='{w.emb['no_columns']}'")(w, rd),
         "shape (33, 0) has no embedding columns"),
    # -- the run directory
    Case("run-dir-is-a-file", "prepare_data.py", "--run_dir names a file",
         _prep(lambda w: []), "is a file, not a folder", prepare=_file_at),
    Case("run-dir-below-a-file", "prepare_data.py", "--run_dir lies below a file",
         lambda w, rd: _prep(lambda w: [])(w, rd)[:-1] + [str(rd / "sub")],
         "a part of the path is a file, not a folder", prepare=_file_at),
    Case("run-dir-locked", "train_sasrec.py", "a second writer on a run_dir another process writes",
         _sasrec(), "is being written by another process (pid 4242)", prepare=_locked_by_another_writer),
    # -- resuming damaged checkpoints
    Case("sasrec-resume-without-checkpoint", "train_sasrec.py", "--resume on an empty run_dir",
         lambda w, rd: _sasrec()(w, rd) + ["--resume"], "--resume given but"),
    Case("sasrec-resume-null-json", "train_sasrec.py", "--resume with last.json holding `null`",
         lambda w, rd: _sasrec()(w, rd) + ["--resume"], "not a checkpoint (expected a JSON object, found null)",
         prepare=_copy_run("scorer", _write_json_file("last.json", None))),
    Case("sasrec-resume-damaged-rng", "train_sasrec.py", "--resume with a damaged RNG string in last.json",
         lambda w, rd: _sasrec()(w, rd) + ["--resume"], "the RNG state is damaged",
         prepare=_copy_run("scorer", _edit_rng)),
    Case("onerec-resume-null-json", "train_onerec.py", "--resume with last.json holding `null`",
         lambda w, rd: _onerec()(w, rd) + ["--resume"], "not a checkpoint (expected a JSON object, found null)",
         prepare=_copy_run("onerec", _write_json_file("last.json", None))),
    # -- recommend.py batch files and output
    Case("recommend-items-not-a-list", "recommend.py", 'batch line {"items": 5}',
         _recommend("--batch", "{batch[items_number]}"), "'items' must be a list of item ids, got 5"),
    Case("recommend-titles-not-strings", "recommend.py", 'batch line {"titles": [1]}',
         _recommend("--batch", "{batch[titles_numbers]}"), "'titles' must be a list of titles, got [1]"),
    Case("recommend-items-a-string", "recommend.py", 'batch line {"items": "123"}',
         _recommend("--batch", "{batch[items_string]}"), "'items' must be a list of item ids, got \"123\""),
    Case("recommend-batch-not-utf8", "recommend.py", "batch file in Latin-1",
         _recommend("--batch", "{batch[latin1]}"), "latin1.jsonl: not UTF-8 text"),
    Case("recommend-output-is-a-folder", "recommend.py", "--output names a folder",
         lambda w, rd: _recommend("--batch", "{batch[good]}")(w, rd) + ["--output", str(w.root / "batch")],
         "is a folder; give a file path"),
    Case("recommend-output-below-a-file", "recommend.py", "--output below a file",
         lambda w, rd: _recommend("--batch", "{batch[good]}")(w, rd) + [
             "--output", str(w.batch["good"] / "recs.jsonl")], "cannot write --output"),
    Case("recommend-run-without-semantic-ids", "recommend.py", "an onerec run whose results.json lacks semantic_ids",
         lambda w, rd: ["--onerec_run", str(rd), "--items", "1"], "no semantic_ids.dir",
         prepare=_onerec_run_without_sid_entry),
]


# ---------------------------------------------------------------- checks
ARTIFACTS = ("results.json", "semantic_ids.safetensors", "semantic_ids.json", "tokenizer.safetensors",
             "ranks.safetensors", "config.gin")


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (empty when it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary files of an interrupted atomic write."""
    return [str(p) for p in folder.rglob("*.tmp")] if folder.exists() else []


def execute(case: Case, world: World, run_dir: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """Run a case; returns the process and snapshots of run_dir before and after."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    if case.prepare is not None:
        case.prepare(world, run_dir)
    before = snapshot(run_dir)
    proc = run_script(case.script, case.args(world, run_dir), world.cache)
    return proc, before, snapshot(run_dir)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def user_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one stderr line ('error: ...') of a script stopped by a user error: exit 2, no traceback."""
    lines = stderr_lines(proc)
    assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stderr, proc.stderr[-2500:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def main() -> None:
    """Print the docs table: every case with the exact line its script printed."""
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        world = build_world(Path(tmp) / "world")
        print("| # | script | bad input | exit | message on stderr (exact) |")
        print("|---|---|---|---|---|")
        for n, case in enumerate(CASES, 1):
            proc, _, _ = execute(case, world, Path(tmp) / "runs" / case.name)
            lines = stderr_lines(proc)
            if "Traceback" in proc.stderr:      # a bug: show the exception, not the whole stack
                lines = ["Traceback (…)"] + [ln.strip() for ln in lines if not ln.startswith(" ")][-1:] + \
                        [ln.strip() for ln in lines if ln.strip().startswith("In call to configurable")][-1:]
            shown = " ⏎ ".join(lines) if lines else "(nothing)"
            shown = shown.replace(tmp, "$TMP").replace(str(REPO), ".").replace("|", "\\|")
            if len(shown) > 600:
                shown = shown[:600] + " …"
            print(f"| {n} | {case.script} | {case.what} | {proc.returncode} | `{shown}` |", flush=True)


if __name__ == "__main__":
    main()
