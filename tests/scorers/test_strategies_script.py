"""Every training strategy of issue 6 through scripts/train_sasrec.py, as a user runs it: tiny
synthetic data, each option on its own, results.json written and naming what was on; bad
combinations end with one stderr line and exit 2."""
import json
import math
from pathlib import Path

import pytest

from reliability_cases import SCORER_TINY, SID_TINY, SYN, gin_args, run_script, user_error_line

SAMPLED = ["ScorerLoss.name='sampled_softmax'", "ScorerLoss.num_negatives=4"]
CONTENT = ["similar_item_table.source='content'", "item_embeddings.source='collaborative'",
           "item_embeddings.dim=8", "neighbour_table.k=3"]

CASES = {
    "cosine-ce": (["make_similarity.name='cosine'"], {"similarity": "cosine", "loss": "ce"}),
    "fusion-sampled": (["make_similarity.name='fusion'", *SAMPLED], {"similarity": "fusion"}),
    "hard-state": ([*SAMPLED, "build_negative_sampler.name='hard'", "HardNegativeSampler.query='state'",
                    "HardNegativeSampler.refresh_every=2"], {"negative_sampler": "HardNegativeSampler"}),
    "hard-sequence": ([*SAMPLED, "build_negative_sampler.name='hard'", "HardNegativeSampler.query='sequence'",
                       "HardNegativeSampler.refresh_every=2"], {"negative_sampler": "HardNegativeSampler"}),
    "curriculum": ([*SAMPLED, "build_negative_sampler.name='curriculum'",
                    "CurriculumNegativeSampler.phase_epochs=[0, 1]",
                    "CurriculumNegativeSampler.phase_ratios="
                    "[{'uniform': 1.0}, {'hard': 0.5, 'uniform': 0.5}]"],
                   {"negative_sampler": "CurriculumNegativeSampler"}),
    "hard-content": ([*SAMPLED, "build_negative_sampler.name='mixture'",
                      "MixtureNegativeSampler.ratios={'hard': 0.5, 'uniform': 0.5}",
                      "HardNegativeSampler.embeddings='content'", "HardNegativeSampler.query='target'",
                      "item_embeddings.source='collaborative'", "item_embeddings.dim=8"],
                     {"negative_sampler": "MixtureNegativeSampler"}),
    "growing": ([*SAMPLED, "build_negative_sampler.name='growing'", "NegativeCountSchedule.start=1",
                 "NegativeCountSchedule.end=3", "NegativeCountSchedule.ramp_epochs=1"],
                {"negative_sampler": "GrowingCountSampler"}),
    "semantic-posonly-content": (["SemanticConsistencyLoss.weight=0.1", *CONTENT],
                                 {"auxiliary_losses": {"semantic": {"mode": "positive_only", "weight": 0.1,
                                                                    "similar_items_per_item": 3}}}),
    "semantic-posneg-ce": (["SemanticConsistencyLoss.weight=0.1", "SemanticConsistencyLoss.mode='pos_neg'",
                            "SemanticConsistencyLoss.num_negatives=2", *CONTENT], {"loss": "ce"}),
    "interest": (["InterestContrastLoss.weight=0.1", "InterestContrastLoss.short_k=2"],
                 {"auxiliary_losses": {"interest": {"short_k": 2, "weight": 0.1}}}),
}


def _train(tmp_path, params, base="configs/synthetic/sasrec-ce.gin"):
    run = tmp_path / "run"
    proc = run_script("train_sasrec.py", ["--gin_file", base, *gin_args(SYN + SCORER_TINY + params),
                                          "--run_dir", str(run)], tmp_path / "cache")
    return proc, run


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_strategy_trains_end_to_end_and_is_recorded(tmp_path, case):
    params, expected = CASES[case]
    proc, run = _train(tmp_path, params)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((run / "results.json").read_text())
    for key, value in expected.items():
        assert res["params"][key] == value, (key, res["params"][key])
    assert math.isfinite(res["test"]["full"]["ndcg@10"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


@pytest.mark.slow
def test_semantic_id_prefix_neighbours_from_a_stage_one_run(tmp_path):
    sid = tmp_path / "sid"
    proc = run_script("train_rqvae.py", ["--gin_file", "configs/synthetic/rqkmeans.gin",
                                         *gin_args(SYN + SID_TINY), "--run_dir", str(sid)],
                      tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    proc, run = _train(tmp_path, ["SemanticConsistencyLoss.weight=0.1", "similar_item_table.source='prefix'",
                                  f"similar_item_table.semantic_ids_dir='{sid}'", "prefix_table.prefix_len=1",
                                  "prefix_table.k=4"])
    assert proc.returncode == 0, proc.stderr
    res = json.loads((run / "results.json").read_text())
    assert res["params"]["auxiliary_losses"]["semantic"]["similar_items_per_item"] == 4
    # Content neighbours must come from the embeddings the semantic IDs were built from.
    proc, _ = _train(tmp_path / "x", ["SemanticConsistencyLoss.weight=0.1",
                                      f"similar_item_table.semantic_ids_dir='{sid}'",
                                      "item_embeddings.source='attributes'", "item_embeddings.dim=8"])
    assert "semantic IDs were built from embeddings" in user_error_line(proc)


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    (["SemanticConsistencyLoss.weight=0.1", "similar_item_table.source='prefix'"], "semantic_ids_dir"),
    (["InterestContrastLoss.weight=-1.0"], "InterestContrastLoss"),
])
def test_bad_strategy_settings_are_one_line_and_exit_2(tmp_path, params, message):
    proc, _ = _train(tmp_path, params)
    assert message in user_error_line(proc)



def test_beauty_ablation_configs_parse_and_change_one_thing_on_the_right_base(monkeypatch):
    import importlib.util

    import gin
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)                                   # gin includes are relative to the CWD
    spec = importlib.util.spec_from_file_location("train_sasrec", root / "scripts" / "train_sasrec.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))      # registers the configurables
    files = sorted((root / "configs" / "amazon-beauty" / "ablations").glob("*.gin"))
    assert len(files) >= 15
    for f in [*files, root / "configs" / "amazon-beauty" / "sasrec-ce-cosine.gin"]:
        sampled = f.stem.startswith(("neg-", "sampled-"))
        base = ("configs/amazon-beauty/ablations/sampled-softmax-uniform.gin" if f.stem.startswith("neg-")
                else "configs/amazon-beauty/sasrec-ce.gin")
        assert f"include '{base}'" in f.read_text(), f
        gin.clear_config()
        try:
            gin.parse_config_files_and_bindings([str(f)], [])
            assert gin.query_parameter("ScorerLoss.name") == ("sampled_softmax" if sampled else "ce"), f
        finally:
            gin.clear_config()
