"""Atomic writes leave nothing behind, even after a process was killed mid-write."""
import pytest

from retrieval.core.io import remove_stale_temps


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


@pytest.mark.slow
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
    train = [r for r in records if r["kind"] == "train"]
    assert [r["epoch"] for r in train] == [1, 2] and all(r["loss"] < 9 for r in train)
    assert all(r["kind"] in ("train", "eval") for r in records)            # no stale line left


def test_checkpoint_killed_between_its_two_renames_loads_the_complete_pair(tmp_path):
    """New weights renamed into place, JSON not yet: the loader must use the weights the JSON names."""
    import os

    import torch

    from retrieval.core.io import save_tensors
    from retrieval.core.checkpoints import _digest, _prev_path, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    stem = tmp_path / "checkpoints" / "last"
    save_checkpoint(stem, model, state={"epoch": 1})
    old = {k: v.clone() for k, v in model.state_dict().items()}
    assert not _prev_path(stem).exists()
    with torch.no_grad():
        model.weight.add_(1.0)
    # the first half of the next save_checkpoint, then a "kill"
    new = {f"model.{k}": v for k, v in model.state_dict().items()}
    os.replace(stem.with_suffix(".safetensors"), _prev_path(stem))
    save_tensors(stem.with_suffix(".safetensors"), new, metadata={"digest": _digest(new)})
    fresh = torch.nn.Linear(3, 2)
    assert load_checkpoint(stem, fresh, restore_rng=False) == {"epoch": 1}
    assert all(torch.equal(fresh.state_dict()[k], old[k]) for k in old)
    # the next complete save replaces the pair and removes the kept weights
    save_checkpoint(stem, model, state={"epoch": 2})
    assert not _prev_path(stem).exists()
    assert load_checkpoint(stem, fresh, restore_rng=False) == {"epoch": 2}
    assert torch.equal(fresh.weight, model.weight)


def test_a_full_disk_while_saving_tensors_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    """safetensors reports I/O failures as its own error type; the CLI's one-line message needs the
    errno and the file, and no temporary file may stay behind."""
    import safetensors.torch
    import torch

    from retrieval.core.io import save_tensors

    def full(*a, **kw):
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    target = tmp_path / "w.safetensors"
    with pytest.raises(OSError) as e:
        save_tensors(target, {"a": torch.zeros(3)})
    assert e.value.errno == 28 and e.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_an_oserror_reraised_by_gin_still_names_errno_and_file():
    """gin re-raises an exception from a configurable with only its text; the CLI line must still
    say what failed and why."""
    import gin

    from retrieval.core.cli import EXIT_USER_ERROR, error_line

    @gin.configurable("disk_full_probe")
    def probe():
        raise OSError(28, "No space left on device", "/runs/x/checkpoints/last.safetensors")
    try:
        probe()
    except OSError as e:
        line, code = error_line(e)
    assert code == EXIT_USER_ERROR
    assert line == ("cannot write or read /runs/x/checkpoints/last.safetensors: no space left on "
                    "device; free some disk space and run again")
