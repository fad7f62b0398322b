"""Shared helpers of the baseline tests (tests/baselines/test_bpr_mf_ncf.py and
tests/scorers/test_gru4rec_bert4rec.py): a small synthetic split, the popularity number a learned
baseline must beat, and the one results.json schema every model's run satisfies (what
scripts/compare.py and the report read)."""
from __future__ import annotations

from retrieval.baselines.counting import MostPopular
from retrieval.evaluation import Evaluator
from retrieval.evaluation.metrics import metric_names
from retrieval.evaluation.schema import validate_results

from tiny_splits import synthetic_split

# The script runs of these tests: the synthetic data at the size of the split below.
SMALL_DATA = ["SyntheticSource.num_users=300", "SyntheticSource.num_items=150",
              "Evaluator.progress=False"]


def small_split():
    """300 users x 150 items of the built-in synthetic generator (the SMALL_DATA split)."""
    return synthetic_split(300, 150, k=5, fingerprint="syn-300-150")


def popularity_ndcg(split) -> float:
    res = Evaluator(sampled=False, progress=False).evaluate(MostPopular().fit(split), split, "test")
    return res.metrics["full"]["ndcg@10"]


def assert_results_schema(record: dict) -> None:
    """The keys and value ranges every results.json of a model run holds (scorers, user-ID
    baselines, popularity / co-occurrence): per stage, full ranking and sampled-100 metrics with
    AUC/GAUC under each protocol, the protocol, the dataset's name and fingerprint, a config hash.
    The fields are those of retrieval.evaluation.schema; the value ranges are checked here."""
    validate_results(record, "results.json")
    ks = record["protocol"]["ks"]
    names = set(metric_names(ks)) | {"auc", "gauc"}
    dataset = record["dataset"]
    users = dataset["counts"]["users"]
    assert isinstance(dataset["name"], str) and len(dataset["fingerprint"]) == 16
    assert isinstance(record["config_hash"], str) and record["config_hash"]
    assert record["protocol"]["exclude_history"] in (True, False)
    assert record["protocol"]["sampled"]["name"] == "sampled-100"
    for stage in ("valid", "test"):
        sec = record[stage]
        assert sec["stage"] == stage and sec["num_users"] == users
        assert sec["exclude_history"] == record["protocol"]["exclude_history"]
        for proto in ("full", "sampled-100"):
            assert names <= set(sec[proto]), (proto, names - set(sec[proto]))
            assert all(0.0 <= v <= 1.0 for v in sec[proto].values())
    first = record["models"][record["model"]]                   # the top level repeats it
    assert first["valid"] == record["valid"] and first["test"] == record["test"]
