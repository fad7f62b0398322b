"""Semantic-KNN (retrieval.baselines.semantic_knn): the content baseline of the cold-start protocol
scores every item by the cosine of its text embedding to the mean of the user's latest items."""
from __future__ import annotations

import gin
import numpy as np
import pytest
import torch

from retrieval.baselines.counting import evaluate_baseline, make_baseline
from retrieval.baselines.semantic_knn import SemanticKNN
from retrieval.core.errors import RecError
from retrieval.core.io import read_json
from retrieval.data.batch import HistoryBatch
from retrieval.evaluation.schema import validate_results

from tiny_splits import synthetic_split


def test_scores_are_the_cosine_to_the_mean_of_the_latest_items():
    split = synthetic_split(num_users=60, num_items=30, k=2, mean_length=8.0)
    e = np.random.default_rng(0).normal(size=(split.num_items, 5)).astype(np.float32)
    knn = SemanticKNN(recent=2).bind(e).fit(split)
    hist = torch.tensor([[0, 4, 7, 9], [0, 0, 0, 12]])
    scores = knn.score_all(HistoryBatch(torch.arange(2), hist, torch.zeros_like(hist)))
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    for row, latest in ((0, [7, 9]), (1, [12])):
        q = unit[np.array(latest) - 1].mean(0)
        want = unit @ (q / np.linalg.norm(q))
        assert np.allclose(scores[row, 1:].numpy(), want, atol=1e-5) and scores[row, 0] == 0


def test_bad_use_is_a_clear_error():
    split = synthetic_split(num_users=60, num_items=30, k=2, mean_length=8.0)
    with pytest.raises(RecError, match="SemanticKNN.recent"):
        SemanticKNN(recent=0)
    with pytest.raises(RecError, match="needs the content embeddings"):
        SemanticKNN().fit(split)
    with pytest.raises(RecError, match="needs the items' content embeddings"):
        make_baseline("semantic_knn")


def test_evaluate_baseline_runs_it_beside_the_others_in_the_one_format(tmp_path):
    gin.clear_config()
    gin.parse_config(["load_split.name = 'synthetic'", "SyntheticSource.num_users = 80",
                      "SyntheticSource.num_items = 60", "SyntheticSource.num_topics = 4",
                      "Evaluator.progress = False"])
    try:
        rng = np.random.default_rng(0)
        record = evaluate_baseline(tmp_path, model=["semantic_knn", "popularity"],
                                   content_embeddings=lambda split: rng.normal(size=(split.num_items, 4)))
    finally:
        gin.clear_config()
    validate_results(read_json(tmp_path / "results.json"), "test")
    assert record["model"] == "semantic_knn" and set(record["models"]) == {"semantic_knn", "popularity"}
