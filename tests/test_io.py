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
