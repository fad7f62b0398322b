"""An interrupted comparison continues: a run that left a checkpoint is resumed, a finished one reused."""
from __future__ import annotations

import time

from retrieval.compare.comparison import RunSpec, execute
from retrieval.core.checkpoints import LAST


def _checkpoint(spec: RunSpec, root) -> None:
    marker = spec.run_dir(root) / f"{LAST}.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")


def test_a_run_with_a_checkpoint_is_resumed(tmp_path):
    spec = RunSpec("sasrec", "scorer", "train_sasrec.py", ("configs/x.gin",), 1)
    assert "--resume" not in spec.command(tmp_path)
    _checkpoint(spec, tmp_path)
    cmd = spec.command(tmp_path)
    assert cmd[-1] == "--resume" and cmd[cmd.index("--run_dir") + 1] == str(spec.run_dir(tmp_path))
    assert "ScorerTrainer.seed=1" in cmd


def test_scripts_without_resume_never_get_the_flag(tmp_path):
    for script, kind in (("train_rqvae.py", "semantic_ids"), ("evaluate_baseline.py", "baseline")):
        spec = RunSpec(kind, kind, script, (), 0)
        _checkpoint(spec, tmp_path)
        assert "--resume" not in spec.command(tmp_path)


def test_finished_runs_are_reused_not_resumed(tmp_path):
    spec = RunSpec("sasrec", "scorer", "train_sasrec.py", ("configs/x.gin",), 0)
    _checkpoint(spec, tmp_path)
    (spec.run_dir(tmp_path) / "results.json").write_text("{}")
    lines = []
    assert execute([spec], tmp_path, log=lines.append) == {spec: 0.0}
    assert lines == [f"[1/1] sasrec seed 0: reused {spec.run_dir(tmp_path)}"]


def test_parallel_runs_log_whole_lines(tmp_path):
    """With jobs > 1 the worker threads share the log; one message never splits another."""
    specs = [RunSpec("sasrec", "scorer", "train_sasrec.py", ("configs/x.gin",), s) for s in range(6)]
    for spec in specs:
        _checkpoint(spec, tmp_path)
        (spec.run_dir(tmp_path) / "results.json").write_text("{}")
    pieces = []

    def slow_log(msg: str) -> None:             # writes a line in two pieces, like print's text + "\n"
        pieces.append(msg)
        time.sleep(0.02)
        pieces.append("\n")

    assert execute(specs, tmp_path, log=slow_log, jobs=3) == {s: 0.0 for s in specs}
    assert pieces[1::2] == ["\n"] * len(specs)
    assert sorted(pieces[0::2]) == sorted(f"[{i}/6] sasrec seed {i - 1}: reused {s.run_dir(tmp_path)}"
                                          for i, s in enumerate(specs, 1))
