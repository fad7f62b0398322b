"""Atomic writes leave nothing behind, even after a process was killed mid-write."""
from retrieval.io import remove_stale_temps


def test_remove_stale_temps_deletes_only_interrupted_atomic_writes(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".last.safetensors.ab12cd.tmp"
    stale.write_bytes(b"half")
    keep = tmp_path / "checkpoints" / "last.safetensors"
    keep.write_bytes(b"whole")
    notes = tmp_path / "notes.tmp"          # not one of ours: no leading dot
    notes.write_text("x")
    removed = remove_stale_temps(tmp_path)
    assert removed == [stale]
    assert not stale.exists() and keep.exists() and notes.exists()
    assert remove_stale_temps(tmp_path / "missing") == []


def test_fresh_run_drops_metric_lines_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    """A run killed before any checkpoint left metric lines; starting again must not append to them."""
    import json

    from reliability_cases import SCORER_TINY, SYN, gin_args, run_script

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = [{"epoch": 1, "step": 3, "loss": 9.9}, {"epoch": 2, "step": 6, "loss": 9.8}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    proc = run_script("train_sasrec.py", ["--gin_file", "configs/synthetic/sasrec-bce.gin",
                                          *gin_args(SYN + SCORER_TINY), "--run_dir", str(run_dir)],
                      tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["loss"] < 9 for r in records)
