"""Comparison.references: numbers not measured here are checked before any run starts."""
from __future__ import annotations

import pytest

from retrieval.compare.comparison import Comparison
from retrieval.core.errors import RecError


@pytest.mark.parametrize("refs, message", [
    ({"paper": {"ndcg@11": 0.1}}, r"Comparison.references\['paper'\]: unknown metric 'ndcg@11'"),
    ({"paper": {"ndcg@10": "0.1"}}, r"\['ndcg@10'\] = '0.1' is not a number"),
    ({"paper": {}}, r"must be a non-empty"),
    ({"paper": {"ndcg@10": 0.1, "model": 3}}, r"\['model'\] = 3 must be the name of a compared model"),
])
def test_a_bad_reference_is_refused_before_any_run(refs, message):
    comp = Comparison(data_gin="configs/synthetic/data.gin", references=refs)
    with pytest.raises(RecError, match=message):
        comp.plan()


def test_good_references_plan_as_usual():
    comp = Comparison(data_gin="configs/synthetic/data.gin", baselines=("configs/synthetic/baseline.gin",),
                      references={"SASRec (paper)": {"ndcg@10": 0.18, "hr@10": 0.315, "mrr": 0.1}})
    assert [s.model for s in comp.plan()] == ["baselines"]
