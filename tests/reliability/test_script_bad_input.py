"""Bad input to any command-line script: exit status 2, exactly one line on stderr that says what is
wrong (naming the file, key or id) and how to fix it, no traceback, and no partial artifact.

The cases are the table in tests/reliability_cases.py (also the source of docs/reliability.md).
They run as subprocesses on tiny inputs built once per session; two at a time, since nearly all
their time is Python start-up and imports.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from reliability_cases import (ARTIFACTS, CASES, EXIT_USER_ERROR, ML_DATA, REPO, SCORER_TINY, SYN, Case,
                               build_world, env, execute, gin_args, leftovers, run_script, snapshot,
                               stderr_lines)
from retrieval.core.io import read_json

BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("reliability") / "world")


@pytest.fixture(scope="session")
def finished_runs_before(world):
    return {p: snapshot(p) for p in (world.onerec, world.scorer, world.sid_ml)}


@pytest.fixture(scope="session")
def outcomes(request, world, finished_runs_before, tmp_path_factory):
    """Run every case this session selected (two at a time); {name: (proc, before, after, run_dir)}."""
    wanted = [item.callspec.params["name"] for item in request.session.items
              if item.originalname == "test_bad_input_fails_cleanly" and hasattr(item, "callspec")]
    runs = tmp_path_factory.mktemp("runs")

    def one(name):
        rd = runs / name
        return name, (*execute(BY_NAME[name], world, rd), rd)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, wanted))


def test_the_table_has_at_least_30_cases_over_every_script():
    assert len(CASES) >= 30 and len(BY_NAME) == len(CASES)
    assert {c.script for c in CASES} == {"prepare_data.py", "evaluate_baseline.py", "train_rqvae.py",
                                         "train_sasrec.py", "train_onerec.py", "recommend.py", "compare.py"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_bad_input_fails_cleanly(name, outcomes):
    case: Case = BY_NAME[name]
    proc, before, after, run_dir = outcomes[name]
    lines = stderr_lines(proc)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2500:]
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-2500:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and case.expect in lines[0], lines[0]
    if case.prepare is None:
        assert after == {}, sorted(after)       # absent, or (compare.py keeps its run dir) empty
    else:
        assert after == before                                # an existing run is left untouched
    assert not any(p.rsplit("/", 1)[-1] in ARTIFACTS for p in set(after) - set(before))
    assert leftovers(run_dir) == []


@pytest.mark.slow
def test_failed_cases_left_the_finished_runs_untouched(outcomes, world, finished_runs_before):
    assert outcomes is not None                               # runs after the cases
    for path, files in finished_runs_before.items():
        assert snapshot(path) == files, path
        assert leftovers(path) == []


# ---------------------------------------------------------------- inputs that are accepted
def _prepare(world, tmp_path, text: str):
    rd = tmp_path / "run"
    proc = run_script("prepare_data.py", ["--gin_file", "configs/synthetic/data.gin",
                                          *gin_args(["load_split.name='text'", f"TextSource.path='{world.text[text]}'"]),
                                          "--run_dir", str(rd)], world.cache)
    assert proc.returncode == 0, proc.stderr
    return read_json(rd / "results.json")["dataset"]


@pytest.mark.slow
def test_duplicated_rows_are_kept_as_repeated_interactions(world, tmp_path):
    """Decision: a repeated line is a repeated interaction (as in the SASRec/TiSASRec loaders, and
    as docs/protocol.md §2 counts every rating), so duplicating every line doubles the interactions and
    changes no user or item count."""
    once, twice = _prepare(world, tmp_path / "a", "good"), _prepare(world, tmp_path / "b", "duplicated")
    assert twice["raw_counts"]["interactions"] == 2 * once["raw_counts"]["interactions"]
    assert twice["counts"]["interactions"] == 2 * once["counts"]["interactions"]
    assert (twice["counts"]["users"], twice["counts"]["items"]) == (once["counts"]["users"], once["counts"]["items"])


@pytest.mark.slow
def test_users_with_one_interaction_are_dropped_not_an_error(world, tmp_path):
    """A few one-event users among normal ones are filtered out (docs/protocol.md §2: < 3 events)."""
    mixed = world.root / "text" / "mixed.txt"
    mixed.write_text(world.text["good"].read_text() + "".join(f"{u} 1 5\n" for u in range(500, 505)))
    rd = tmp_path / "run"
    proc = run_script("prepare_data.py", ["--gin_file", "configs/synthetic/data.gin",
                                          *gin_args(["load_split.name='text'", f"TextSource.path='{mixed}'"]),
                                          "--run_dir", str(rd)], world.cache)
    assert proc.returncode == 0, proc.stderr
    ds = read_json(rd / "results.json")["dataset"]
    assert ds["raw_counts"]["users"] == 45 and ds["counts"]["users"] == 40


@pytest.mark.slow
def test_tisasrec_on_a_file_without_timestamps_falls_back_to_positions_and_says_so(world, tmp_path):
    """Decision (the scorer trainer's): without a timestamp column the times are event positions,
    so TiSASRec's intervals are position gaps; the run succeeds and results.json records it."""
    rd = tmp_path / "run"
    args = ["--gin_file", "configs/synthetic/tisasrec-bce.gin",
            *gin_args(SCORER_TINY + ["load_split.name='text'", f"TextSource.path='{world.text['no_time']}'"]),
            "--run_dir", str(rd)]
    proc = run_script("train_sasrec.py", args, world.cache)
    assert proc.returncode == 0, proc.stderr
    res = read_json(rd / "results.json")
    assert res["dataset"]["has_time"] is False and res["params"]["variant"] == "tisasrec"
    assert any("no timestamps" in n and "position" in n for n in res["notes"]), res["notes"]


@pytest.mark.slow
def test_the_world_is_valid_input(world, tmp_path):
    """The shared inputs are good apart from what each case breaks: the tiny MovieLens copy loads
    and recommend works on the finished run (so the recommend cases fail for their own reason)."""
    rd = tmp_path / "prep"
    proc = run_script("prepare_data.py", ["--gin_file", "configs/synthetic/data.gin",
                                          *gin_args(ML_DATA + [f"MovieLensLatestSmallSource.path='{world.ml['tiny']}'"]),
                                          "--run_dir", str(rd)], world.cache)
    assert proc.returncode == 0, proc.stderr
    proc = run_script("recommend.py", ["--onerec_run", str(world.onerec), "--titles", "Movie 3 (1993)",
                                       "--k", "5", "--json"], world.cache)
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(proc.stdout)["generative"]
    assert len(recs) == 5 and "3" not in [r["raw_id"] for r in recs]     # history excluded


@pytest.mark.slow
def test_a_documented_negative_sampler_name_is_accepted(world, tmp_path):
    """retrieval/negatives/samplers.py documents `build_negative_sampler.name = 'popularity'` (and 'hard',
    'mixture', 'curriculum', 'growing'); the script must offer them, not only 'uniform'."""
    rd = tmp_path / "run"
    args = ["--gin_file", "configs/synthetic/sasrec-bce.gin",
            *gin_args(SYN + SCORER_TINY + ["ScorerTrainer.num_epochs=1", "build_negative_sampler.name='popularity'"]),
            "--run_dir", str(rd)]
    proc = run_script("train_sasrec.py", args, world.cache)
    assert proc.returncode == 0, proc.stderr
    assert read_json(rd / "results.json")["params"]["negative_sampler"] != "UniformNegativeSampler"


# ---------------------------------------------------------------- issue 17: the shell around every script
def test_eval_users_zero_means_all_users_in_both_trainers():
    """Decision: `eval_users = 0` validates on all users in ScorerTrainer, as it always did in
    OneRecTrainer; a negative count is refused by both (case gin-eval-users-negative)."""
    from onerec.trainer import OneRecTrainer
    from retrieval.core.errors import RecError
    from retrieval.scorers.trainer import ScorerTrainer
    assert ScorerTrainer(eval_users=0, device="cpu").eval_users is None
    assert OneRecTrainer(eval_users=0, device="cpu").eval_subsample(7).tolist() == list(range(7))
    with pytest.raises(RecError, match=r"OneRecTrainer.eval_users = -1 must be >= 0"):
        OneRecTrainer(eval_users=-1, device="cpu")


@pytest.mark.parametrize("err, expect", [
    (OSError(28, "No space left on device", "runs/x/checkpoints/last.safetensors"),
     "cannot write or read runs/x/checkpoints/last.safetensors: no space left on device; free some disk space and run again"),
    (PermissionError(13, "Permission denied", "runs/x/results.json"),
     "cannot write or read runs/x/results.json: permission denied; choose a --run_dir you can write to"),
    (OSError(30, "Read-only file system", "/mnt/ro/x"),
     "cannot write or read /mnt/ro/x: read-only file system; choose a --run_dir on a writable disk"),
])
def test_os_errors_are_user_errors_with_one_line(err, expect):
    from retrieval.core.cli import EXIT_USER_ERROR as code, error_line
    assert error_line(err) == (expect, code)


def test_an_unexpected_exception_is_one_line_that_says_bug_with_exit_1():
    from retrieval.core.cli import error_line
    line, code = error_line(ZeroDivisionError("division by zero"))
    assert code == 1 and "\n" not in line
    assert line.startswith("ZeroDivisionError: division by zero (an unexpected error: a bug")


def test_the_run_dir_lock_refuses_a_second_writer_and_is_removed_on_release(tmp_path):
    from retrieval.core.errors import RecError
    from retrieval.core.run_lock import RunDirLock
    first, second = RunDirLock(tmp_path), RunDirLock(tmp_path)
    first.acquire()
    with pytest.raises(RecError, match=rf"{tmp_path} is being written by another process \(pid \d+\)"):
        second.acquire()
    first.release()
    assert not (tmp_path / ".lock").exists()
    second.acquire()                                   # free again
    second.release()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_artifacts_respect_the_umask(tmp_path, umask, mode):
    from retrieval.core.io import write_json
    old = os.umask(umask)
    try:
        write_json(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == mode


def test_compare_quotes_paths_in_the_gin_bindings_it_passes_on(tmp_path, monkeypatch):
    """`compare.py --run_dir "runs/bob's cmp"`: the semantic-ID folder given to train_onerec.py is
    a quoted gin string that reads back as the same path."""
    import gin
    from retrieval.compare import comparison
    root = tmp_path / "bob's \"cmp\""
    sid = root / "runs" / "semantic-ids" / "seed0"
    seen = []
    monkeypatch.setattr(comparison.subprocess, "run",
                        lambda cmd, **kw: seen.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    spec = comparison.RunSpec("onerec", "generative", "train_onerec.py", ("configs/x.gin",), 0)
    comparison._run_one(spec, root, {0: sid}, "tag", None, log=lambda *a: None)
    binding = next(p for p in seen[0] if p.startswith("train_onerec.semantic_ids_dir="))

    @gin.configurable("quoted_path_probe")
    def probe(semantic_ids_dir=None):
        return semantic_ids_dir
    gin.clear_config()
    gin.parse_config(binding.replace("train_onerec.", "quoted_path_probe.", 1))
    assert probe() == str(sid)
    gin.clear_config()


@pytest.mark.slow
def test_an_absolute_gin_file_works_from_outside_the_repo(world, tmp_path):
    """Configs include each other by repo-relative paths; the CLI adds the repo root (and the
    folders above each --gin_file) to gin's search path, so the working directory does not matter."""
    rd = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate_baseline.py"),
         "--gin_file", str(REPO / "configs" / "synthetic" / "baseline.gin"),
         *gin_args(["load_split.name='text'", f"TextSource.path='{world.text['good']}'"]),
         "--run_dir", str(rd)], cwd=tmp_path, env=env(world.cache), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (rd / "results.json").is_file() and not (rd / ".lock").exists()


def test_a_read_only_run_dir_is_one_line(tmp_path, monkeypatch, capsys):
    """The CLI in-process on a folder it cannot write. Root writes into a chmod-555 folder, so the
    denial is made by the file system call itself when the tests run as root."""
    import errno

    from retrieval.core import cli, run_lock
    rd = tmp_path / "ro"
    rd.mkdir()
    rd.chmod(0o555)
    if os.geteuid() == 0:
        real_open = run_lock.os.open

        def denied(path, *a, **kw):
            if str(path).startswith(str(rd)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *a, **kw)
        monkeypatch.setattr(run_lock.os, "open", denied)
    called = []
    monkeypatch.setattr(sys, "argv", ["prepare_data.py", "--run_dir", str(rd)])
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.run(lambda args, run_dir: called.append(run_dir), "probe")
    finally:
        rd.chmod(0o755)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == EXIT_USER_ERROR and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --run_dir {rd} is not writable"), lines[0]
    assert called == [] and list(rd.iterdir()) == []
