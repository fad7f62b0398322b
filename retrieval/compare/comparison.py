"""The comparison pipeline: every model of both paths, on one dataset and one split, for a list of
seeds — run (or reused when finished) as the project's own scripts, each in its own run directory.

Layout under the report directory:
    runs/<model>/seed<k>/      one run of scripts/train_*.py (results.json, ranks.safetensors, ...)
    logs/<model>-seed<k>.log   its stdout and stderr
A run whose results.json exists is reused, and a run interrupted after its first checkpoint is
resumed (--resume), so an interrupted comparison continues where it stopped.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import gin

from retrieval.core.checkpoints import LAST
from retrieval.core.errors import RecError
from retrieval.evaluation.metrics import metric_names

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# The gin binding that carries the seed, per script.
SEED_BINDINGS = {
    "train_rqvae.py": "make_tokenizer.seed",
    "train_onerec.py": "OneRecTrainer.seed",
    "train_sasrec.py": "ScorerTrainer.seed",
    "train_cf.py": "CFTrainer.seed",
    "evaluate_baseline.py": None,
}
RESUMABLE = {"train_onerec.py", "train_sasrec.py", "train_cf.py"}   # scripts that take --resume


@dataclass(frozen=True)
class RunSpec:
    """One script invocation of the comparison."""

    model: str
    kind: str                      # "semantic_ids" | "generative" | "scorer" | "cf" | "baseline"
    script: str
    gin_files: tuple
    seed: int
    params: tuple = ()

    def run_dir(self, root: Path) -> Path:
        return root / "runs" / self.model / f"seed{self.seed}"

    def command(self, root: Path) -> list[str]:
        """The script's command line; --resume when an interrupted run left a checkpoint."""
        cmd = [sys.executable, str(SCRIPTS / self.script)]
        for f in self.gin_files:
            cmd += ["--gin_file", f]
        binding = SEED_BINDINGS[self.script]
        params = list(self.params) + ([f"{binding}={self.seed}"] if binding else [])
        for p in params:
            cmd += ["--gin_param", p]
        cmd += ["--run_dir", str(self.run_dir(root))]
        return cmd + (["--resume"] if self.resumable(root) else [])

    def resumable(self, root: Path) -> bool:
        return self.script in RESUMABLE and (self.run_dir(root) / f"{LAST}.json").is_file()


@gin.configurable
@dataclass
class Comparison:
    """What to compare. Every list of gin files must include the same dataset config.

    data_gin: the dataset config shared by every run (also used to load the split for the report).
    semantic_ids: gin files of scripts/train_rqvae.py (stage 1, one artifact per seed).
    generative: {model name: gin files of scripts/train_onerec.py}.
    scorers: {model name: gin files of scripts/train_sasrec.py} (SASRec family, GRU4Rec, BERT4Rec).
    cf_models: {model name: gin files of scripts/train_cf.py}: the learned user-ID baselines
        (BPR-MF, NCF), one run per seed like the scorers.
    baselines: gin files of scripts/evaluate_baseline.py (popularity + co-occurrence), or empty.
    extra_params: gin bindings appended to every run (e.g. smaller epochs for a smoke run).
    kind_params: {kind: gin bindings} appended to the runs of one kind only ("semantic_ids",
        "generative", "scorer", "cf", "baseline"), for bindings only that script knows, e.g.
        {'generative': ['OneRecTrainer.max_minutes = 10']}.
    jobs: how many runs execute at once (1 = one after another; on a GPU box with room for several
        small models, or a CPU box with cores to spare, more finish the comparison sooner).
    references: {label: {metric: value}}: numbers not measured here (targets, published results)
        that the report prints beside the measured ones, e.g. {'SASRec (paper)': {'ndcg@10': 0.18}};
        metrics are test full-ranking keys of the report's tables (hr@10, ndcg@10, mrr, ...); an
        optional 'model': <compared model> puts that model's measured numbers under the reference.
    references_note: one paragraph under that table: where the numbers come from, what differs.
    """

    data_gin: str = gin.REQUIRED
    seeds: tuple = (0, 1, 2)
    semantic_ids: tuple = ()
    generative: dict = field(default_factory=dict)
    scorers: dict = field(default_factory=dict)
    cf_models: dict = field(default_factory=dict)
    baselines: tuple = ()
    extra_params: tuple = ()
    kind_params: dict = field(default_factory=dict)
    jobs: int = 1
    references: dict = field(default_factory=dict)
    references_note: str = ""

    def plan(self) -> list[RunSpec]:
        check_references(self.references)
        if self.generative and not self.semantic_ids:
            raise RecError("Comparison.generative needs Comparison.semantic_ids (the gin files of "
                           "scripts/train_rqvae.py) to build the semantic IDs it reads")
        kinds = ("semantic_ids", "generative", "scorer", "cf", "baseline")
        unknown = sorted(set(self.kind_params) - set(kinds))
        if unknown:
            raise RecError(f"Comparison.kind_params: unknown kind {unknown[0]!r}; use one of {', '.join(kinds)}")
        specs = []

        def extra(kind: str) -> tuple:
            return tuple(self.extra_params) + tuple(self.kind_params.get(kind, ()))

        for seed in self.seeds:
            if self.semantic_ids:
                specs.append(RunSpec("semantic-ids", "semantic_ids", "train_rqvae.py",
                                     tuple(self.semantic_ids), seed, extra("semantic_ids")))
        for name, files in self.generative.items():
            for seed in self.seeds:
                specs.append(RunSpec(name, "generative", "train_onerec.py", tuple(files), seed,
                                     extra("generative")))
        for name, files in self.scorers.items():
            for seed in self.seeds:
                specs.append(RunSpec(name, "scorer", "train_sasrec.py", tuple(files), seed, extra("scorer")))
        for name, files in self.cf_models.items():
            for seed in self.seeds:
                specs.append(RunSpec(name, "cf", "train_cf.py", tuple(files), seed, extra("cf")))
        if self.baselines:
            specs.append(RunSpec("baselines", "baseline", "evaluate_baseline.py",
                                 tuple(self.baselines), 0, extra("baseline")))
        for s in specs:
            for f in s.gin_files:
                if not Path(f).is_file():
                    raise RecError(f"Comparison: gin file {f} (model {s.model!r}) not found")
        return specs


def check_references(references: dict) -> None:
    """Refuse a Comparison.references entry the report could not print: a metric its tables do not
    have, or a value that is not a number."""
    metrics = metric_names(auc=True)
    for label, numbers in references.items():
        if not isinstance(numbers, dict) or not numbers:
            raise RecError(f"Comparison.references[{label!r}] must be a non-empty {{metric: value}} dict")
        for metric, value in numbers.items():
            if metric == "model":
                if not isinstance(value, str):
                    raise RecError(f"Comparison.references[{label!r}]['model'] = {value!r} must be the "
                                   "name of a compared model")
                continue
            if metric not in metrics:
                raise RecError(f"Comparison.references[{label!r}]: unknown metric {metric!r}; "
                               f"use one of {', '.join(metrics)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecError(f"Comparison.references[{label!r}][{metric!r}] = {value!r} is not a number")


def _run_one(spec: RunSpec, root: Path, sid_dirs: dict, tag: str, env: dict | None, log) -> float:
    """Run one spec unless finished; returns its wall seconds (0 when reused)."""
    rd = spec.run_dir(root)
    if (rd / "results.json").is_file():
        log(f"{tag}: reused {rd}")
        return 0.0
    if spec.kind == "generative":
        spec = RunSpec(spec.model, spec.kind, spec.script, spec.gin_files, spec.seed,
                       spec.params + (f"train_onerec.semantic_ids_dir={str(sid_dirs[spec.seed])!r}",))
    log_path = root / "logs" / f"{spec.model}-seed{spec.seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{tag}: {'resuming' if spec.resumable(root) else 'running'} {spec.script} -> {rd}")
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as f:
        proc = subprocess.run(spec.command(root), stdout=f, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else "(no output)"
        raise RecError(f"{spec.script} for {spec.model!r} seed {spec.seed} failed ({last}); "
                       f"full log: {log_path}")
    log(f"{tag}: finished in {seconds:.0f} s")
    return seconds


def execute(specs: list[RunSpec], root: Path, log=print, jobs: int = 1) -> dict[RunSpec, float]:
    """Run every spec not yet finished; returns wall seconds per spec (0 when reused).

    jobs > 1 runs that many scripts at once, in two waves: the semantic-ID runs first (OneRec reads
    them), then everything else. Each process then gets cpu_count // jobs torch threads unless
    OMP_NUM_THREADS is set, so parallel runs do not oversubscribe the cores.
    """
    if jobs < 1:
        raise RecError(f"Comparison.jobs = {jobs} must be >= 1")
    sid_dirs = {s.seed: s.run_dir(root) for s in specs if s.kind == "semantic_ids"}
    tags = {s: f"[{i}/{len(specs)}] {s.model} seed {s.seed}" for i, s in enumerate(specs, 1)}
    if jobs == 1:
        return {s: _run_one(s, root, sid_dirs, tags[s], None, log) for s in specs}
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    lock = threading.Lock()

    def locked_log(msg: str) -> None:   # one whole line at a time from the worker threads
        with lock:
            log(msg)

    seconds: dict[RunSpec, float] = {}
    waves = [[s for s in specs if s.kind == "semantic_ids"], [s for s in specs if s.kind != "semantic_ids"]]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for wave in waves:
            futures = {pool.submit(_run_one, s, root, sid_dirs, tags[s], env, locked_log): s for s in wave}
            errors = []
            for fut in as_completed(futures):
                try:
                    seconds[futures[fut]] = fut.result()
                except RecError as e:           # let the others finish; report the first failure
                    errors.append(e)
            if errors:
                raise errors[0]
    return {s: seconds[s] for s in specs}
