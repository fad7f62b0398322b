"""One results format (docs/results-format.md): every model run's results.json follows one schema,
checked by retrieval.evaluation.schema.validate_results; the writer refuses a record off it and the
readers (load_result, the comparison report) refuse a run off it, naming the field.

The slow test runs each training / evaluation script on tiny synthetic data and validates what it
wrote, then builds a comparison report from those runs."""
from __future__ import annotations

import json

import gin
import numpy as np
import pytest

from reliability_cases import ONEREC_TINY, REPO, SCORER_TINY, SID_TINY, SYN, gin_args, run_script
from retrieval.baselines.counting import ItemCooccurrence, MostPopular
from retrieval.compare.comparison import RunSpec
from retrieval.compare.report import collect
from retrieval.core.errors import RecError
from retrieval.core.io import read_json, write_json
from retrieval.evaluation import Evaluator
from retrieval.evaluation.evaluator import FULL, SAMPLED
from retrieval.evaluation.report import load_result, results_json, save_ranks, write_results
from retrieval.evaluation.schema import validate_results

from tiny_splits import make_split

WHERE = "runs/x/results.json"
TRAINED = {"train_seconds_total": 0.9, "epoch_seconds": [0.5, 0.4], "mean_epoch_seconds": 0.45,
           "epoch_cpu_seconds": [0.9, 0.8], "mean_epoch_cpu_seconds": 0.85, "final_eval_seconds": 0.2,
           "device": "cpu"}


def tiny_split():
    rng = np.random.default_rng(0)
    train = [list(rng.integers(1, 21, size=rng.integers(2, 8))) for _ in range(12)]
    return make_split(train, rng.integers(1, 21, size=12), rng.integers(1, 21, size=12), 20)


@pytest.fixture(scope="module")
def evaluated():
    """({name: {stage: EvalResult}} of two baselines, their protocol, the split)."""
    split = tiny_split()
    ev = Evaluator(ks=(5, 10), progress=False, num_generated=10)
    models = {n: {st: ev.evaluate(m.fit(split), split, st) for st in ("valid", "test")}
              for n, m in (("popularity", MostPopular()), ("cooccurrence", ItemCooccurrence()))}
    return models, ev.protocol(), split


def baseline_record(evaluated) -> dict:
    """What retrieval/baselines/counting.py evaluate_baseline writes."""
    models, protocol, split = evaluated
    return results_json(models, protocol, split)


def scorer_record(evaluated) -> dict:
    """What retrieval/scorers/train.py and retrieval/baselines/cf_trainer.py train_cf write: the
    trainer's facts under "training" (retrieval/evaluation/final.py final_results)."""
    models, protocol, split = evaluated
    return results_json({"sasrec": models["popularity"]}, {**protocol, "primary": "full"}, split, {
        "params": {"variant": "sasrec", "num_parameters": 1234, "hidden": 8, "loss": "ce"},
        "training": {"steps": 8, "epochs": 2.0, "best_step": 8, "best_epoch": 2,
                     "best_valid_ndcg@10": 0.1, "stopped_by": "num_epochs", "validation_users": 12,
                     "settings": {"batch_size": 16, "seed": 0}},
        "timing": dict(TRAINED), "notes": ["a note"], "env": {"python": "3.11"}})


def generator_record(evaluated) -> dict:
    """What onerec/pipeline.py train_onerec writes."""
    models, protocol, split = evaluated
    return results_json({"onerec": models["cooccurrence"]}, {**protocol, "beam_width": 10}, split, {
        "semantic_ids": {"dir": "runs/sid", "tokenizer": "rqkmeans", "levels": 2},
        "params": {"num_parameters": 999, "kind": "parallel", "beam_width": 10},
        "training": {"steps": 4, "epochs": 0.5, "best_step": 4, "best_epoch": 0.5,
                     "best_valid_ndcg@10": 0.2, "stopped_by": "max_steps", "validation_users": 12,
                     "settings": {"batch_size": 16, "seed": 0}},
        "timing": {**TRAINED, "eval_valid_s": 0.1, "eval_test_s": 0.1, "total_s": 1.3},
        "env": {"python": "3.11", "torch_threads": 1}})


WRITERS = {"baseline": baseline_record, "scorer": scorer_record, "generator": generator_record}


# ---------------------------------------------------------------- the validator
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_each_writers_record_validates_as_written_to_disk(evaluated, writer, tmp_path):
    record = WRITERS[writer](evaluated)
    write_results(tmp_path, record)
    validate_results(read_json(tmp_path / "results.json"), WHERE)


def test_the_top_level_repeats_the_first_model(evaluated):
    record = baseline_record(evaluated)
    assert record["model"] == "popularity" and list(record["models"]) == ["popularity", "cooccurrence"]
    assert record["valid"] == record["models"]["popularity"]["valid"]
    assert record["test"] == record["models"]["popularity"]["test"]
    assert set(record["test"]) == {"stage", "exclude_history", "num_users", FULL, SAMPLED}
    assert record["dataset"] == {"name": "hand", "fingerprint": "hand", "has_time": True,
                                 "counts": evaluated[2].stats()}
    assert isinstance(record["env"]["python"], str)            # filled in when the writer gives none


def _drop(path: str):
    def edit(r):
        *head, last = path.split("/")
        for k in head:
            r = r[k]
        del r[last]
    return edit


def _set(path: str, value):
    def edit(r):
        *head, last = path.split("/")
        for k in head:
            r = r[k]
        r[last] = value
    return edit


# (edit of a valid scorer record, the field the message must name, what it must say)
BROKEN = {
    "no models": (_drop("models"), "'models'", "is missing"),
    "no env": (_drop("env"), "'env'", "is missing"),
    "no config hash": (_drop("config_hash"), "'config_hash'", "is missing"),
    "config hash a number": (_set("config_hash", 7), "'config_hash'", "expected a string"),
    "old scorer layout": (_set("model", {"variant": "sasrec", "params": 3}), "'model'",
                          "expected a string"),
    "no fingerprint": (_drop("dataset/fingerprint"), "'dataset.fingerprint'", "is missing"),
    "no full ranking": (_drop("models/sasrec/test/full"), "'models.sasrec.test.full'", "is missing"),
    "metric a string": (_set("models/sasrec/valid/full/hr@10", "0.5"), "'models.sasrec.valid.full.hr@10'",
                        "expected a number"),
    "user count true": (_set("models/sasrec/test/num_users", True), "'models.sasrec.test.num_users'",
                        "expected an integer"),
    "stage mislabelled": (_set("models/sasrec/test/stage", "valid"), "'models.sasrec.test.stage'",
                          "under 'test'"),
    "exclude_history missing": (_drop("protocol/exclude_history"), "'protocol.exclude_history'",
                                "is missing"),
    "top level not the first model": (_set("test", {}), "'test'", "differs from models.sasrec.test"),
    "flat trainer fact": (_set("best_epoch", 2), "'best_epoch'", "is not part of the schema"),
    "old params name": (_set("params", {"variant": "sasrec", "params": 3}), "'params.num_parameters'",
                        "is missing"),
    "no best epoch or step": (_set("training", {"steps": 8, "epochs": 2.0}), "'training.best_epoch'",
                              "is missing"),
    "old timing name": (_set("timing", {"train_s": 1.0, "eval_s": 0.2}), "'timing.train_seconds_total'",
                        "is missing"),
    "old epochs name": (_set("training", {"steps": 8, "epochs_run": 2, "best_epoch": 2}),
                        "'training.epochs'", "is missing"),
    "notes not strings": (_set("notes", [1]), "'notes'", "not a string"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_missing_or_ill_typed_field_is_named_in_one_line(evaluated, case):
    edit, field, says = BROKEN[case]
    record = json.loads(json.dumps(scorer_record(evaluated)))
    edit(record)
    with pytest.raises(RecError) as e:
        validate_results(record, WHERE)
    msg = str(e.value)
    assert msg.startswith(f"{WHERE}: field {field} ") and says in msg, msg
    assert "\n" not in msg and "docs/results-format.md" in msg


def test_write_results_refuses_a_record_off_the_schema_and_writes_nothing(evaluated, tmp_path):
    record = scorer_record(evaluated)
    record["model"] = "no-such-model"
    with pytest.raises(RecError, match="field 'model' is 'no-such-model' but the first entry of models"):
        write_results(tmp_path, record)
    assert not (tmp_path / "results.json").exists()


def test_numpy_values_are_checked_as_the_json_they_become(evaluated, tmp_path):
    record = scorer_record(evaluated)
    record["training"]["steps"] = np.int64(8)
    write_results(tmp_path, record)
    assert read_json(tmp_path / "results.json")["training"]["steps"] == 8


# ---------------------------------------------------------------- the readers
def _run(root, model: str, record: dict, models: dict):
    rd = root / "runs" / model / "seed0"
    rd.mkdir(parents=True)
    write_json(rd / "results.json", record)
    save_ranks(rd / "ranks.safetensors", models)
    return rd


def test_load_result_reads_back_every_model_and_stage(evaluated, tmp_path):
    models = evaluated[0]
    write_results(tmp_path, baseline_record(evaluated))
    save_ranks(tmp_path / "ranks.safetensors", models)
    for name, stages in models.items():
        for st, want in stages.items():
            got = load_result(tmp_path, name, st)
            assert got.metrics == want.metrics and np.array_equal(got.users, want.users)
            assert all(np.array_equal(got.ranks[p], want.ranks[p]) for p in want.ranks)


def test_the_comparison_reads_the_one_layout(evaluated, tmp_path):
    models = evaluated[0]
    _run(tmp_path, "sasrec", scorer_record(evaluated), {"sasrec": models["popularity"]})
    _run(tmp_path, "baselines", baseline_record(evaluated), models)
    specs = [RunSpec("sasrec", "scorer", "train_sasrec.py", (), 0),
             RunSpec("baselines", "baseline", "evaluate_baseline.py", (), 0)]
    got = collect(specs, tmp_path, "hand")
    assert list(got) == ["sasrec", "popularity", "cooccurrence"]
    run = got["sasrec"]["runs"][0]
    assert run["params"] == 1234 and run["timing"]["train_seconds_total"] == 0.9
    assert run["test"] == scorer_record(evaluated)["test"]
    users, ranks = run["ranks"]
    order = np.argsort(models["popularity"]["test"].users)
    assert np.array_equal(ranks, models["popularity"]["test"].ranks[FULL][order])


def test_a_run_off_the_schema_is_one_line_naming_the_run_and_the_field(evaluated, tmp_path):
    old = json.loads(json.dumps(scorer_record(evaluated)))
    del old["models"]                                      # the scorer layout before one format
    old["model"] = {"variant": "sasrec", "params": 1234}
    rd = _run(tmp_path, "sasrec", old, {"sasrec": evaluated[0]["popularity"]})
    with pytest.raises(RecError) as e:
        collect([RunSpec("sasrec", "scorer", "train_sasrec.py", (), 0)], tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{rd / 'results.json'}: field 'model' is dict, expected a string")
    assert f"delete {rd}" in msg and "\n" not in msg


def test_a_ranks_file_of_another_run_is_refused(evaluated, tmp_path):
    models = evaluated[0]
    rd = _run(tmp_path, "sasrec", scorer_record(evaluated), {"other": models["popularity"]})
    with pytest.raises(RecError, match=r"ranks.safetensors: no key sasrec/test/users"):
        load_result(rd, "sasrec", "test")


# ---------------------------------------------------------------- every script's output
CF_TINY = ["CFTrainer.num_epochs=2", "CFTrainer.batch_size=64", "CFTrainer.progress=False",
           "CFTrainer.num_threads=1", "BPRMF.dim=8", "Evaluator.progress=False"]


@pytest.mark.slow
def test_every_scripts_results_validate_and_compare(tmp_path, monkeypatch):
    """Each script, as a user runs it on tiny synthetic data, writes a results.json that validates
    and a ranks.safetensors with every model's valid and test ranks; a report reads them all."""
    from retrieval.compare.report import write_report
    from retrieval.core.cli import parse_gin
    from retrieval.data import load_split

    root, cache = tmp_path / "report", tmp_path / "cache"
    runs = [  # (model, kind, script, gin file, bindings)
        ("semantic-ids", "semantic_ids", "train_rqvae.py", "configs/synthetic/rqkmeans.gin", SYN + SID_TINY),
        ("sasrec", "scorer", "train_sasrec.py", "configs/synthetic/sasrec-ce.gin", SYN + SCORER_TINY),
        ("onerec", "generative", "train_onerec.py", "configs/synthetic/onerec.gin",
         SYN + ONEREC_TINY + [f"train_onerec.semantic_ids_dir='{root / 'runs/semantic-ids/seed0'}'"]),
        ("bpr-mf", "cf", "train_cf.py", "configs/synthetic/bpr-mf.gin", SYN + CF_TINY),
        ("baselines", "baseline", "evaluate_baseline.py", "configs/synthetic/baseline.gin",
         SYN + ["Evaluator.progress=False"]),
    ]
    specs = []
    for model, kind, script, gin_file, params in runs:
        spec = RunSpec(model, kind, script, (gin_file,), 0)
        rd = spec.run_dir(root)
        proc = run_script(script, ["--gin_file", gin_file, *gin_args(params), "--run_dir", str(rd)], cache)
        assert proc.returncode == 0, f"{script}:\n{proc.stderr[-3000:]}"
        specs.append(spec)
        if kind == "semantic_ids":
            continue
        record = read_json(rd / "results.json")
        validate_results(record, str(rd / "results.json"))
        for name in record["models"]:
            for stage in ("valid", "test"):
                assert load_result(rd, name, stage).ranks[FULL].shape == (record[stage]["num_users"],)
        if kind != "baseline":
            assert isinstance(record["params"]["num_parameters"], int)
            assert {"steps", "epochs"} <= set(record["training"])
            assert {"train_seconds_total", "final_eval_seconds"} <= set(record["timing"])

    monkeypatch.chdir(REPO)
    parse_gin(["configs/synthetic/data.gin"], SYN)
    try:
        split = load_split()
        out = write_report(root, specs, split, {"exclude_history": True}, "test", {})
    finally:
        gin.clear_config()
    assert set(out["test"][FULL]) == {"sasrec", "onerec", "bpr-mf", "popularity", "cooccurrence"}
    assert out["paired_test"]["generative"] == "onerec" and "error" not in out["paired_test"]
    assert all(out["timing"][m]["train_s"] > 0 for m in ("sasrec", "onerec", "bpr-mf"))
    assert (root / "report.md").is_file()
