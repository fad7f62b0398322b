"""The one results.json schema of a model run (baseline, scorer, user-ID model, generator), checked
in plain Python.

docs/results-format.md describes every field. `write_results` refuses to write a record that
does not pass (that is a bug of the writer) and the comparison report refuses to read one (a run
written before this format, or a damaged file).
"""
from __future__ import annotations

from numbers import Real

from retrieval.core.errors import RecError
from retrieval.evaluation.evaluator import FULL, SAMPLED

STAGES = ("valid", "test")
DOC = "docs/results-format.md"

# field -> (type, required). Nothing else may appear at the top level.
TOP = {"model": (str, True), "models": (dict, True), "valid": (dict, True), "test": (dict, True),
       "protocol": (dict, True), "dataset": (dict, True), "config_hash": (str, True),
       "env": (dict, True), "params": (dict, False), "training": (dict, False),
       "timing": (dict, False), "notes": (list, False), "semantic_ids": (dict, False)}
STAGE = {"stage": (str, True), "exclude_history": (bool, True), "num_users": (int, True),
         FULL: (dict, True), SAMPLED: (dict, False)}
DATASET = {"name": (str, True), "fingerprint": (str, True), "counts": (dict, True),
           "has_time": (bool, False)}
# Open sections: these fields are typed, any other key is free (a model's or trainer's settings).
PROTOCOL = {"exclude_history": (bool, True), "ks": (list, True)}
PARAMS = {"num_parameters": (int, True)}
# Named as retrieval.core.trainer.FitSummary.training() / .timing() name them.
TRAINING = {"steps": (int, True), "epochs": (Real, True), "best_epoch": (Real, False),
            "best_step": (int, False), "best_valid_ndcg@10": (Real, False), "stopped_by": (str, False),
            "validation_users": (int, False), "early_stopping": (dict, False), "settings": (dict, False)}
TIMING = {"train_seconds_total": (Real, True), "final_eval_seconds": (Real, True)}
SEMANTIC_IDS = {"dir": (str, True)}

_NAMES = {str: "a string", dict: "an object", list: "a list", bool: "true or false",
          int: "an integer", Real: "a number"}


def _fail(where: str, field: str, problem: str) -> None:
    raise RecError(f"{where}: field {field!r} {problem} (the results.json schema of {DOC})")


def _is(value, kind) -> bool:
    if kind in (int, Real) and isinstance(value, bool):       # JSON true is not a count
        return False
    return isinstance(value, kind)


def _fields(where: str, prefix: str, section: dict, spec: dict, closed: bool) -> None:
    for key, (kind, required) in spec.items():
        if key not in section:
            if required:
                _fail(where, prefix + key, "is missing")
        elif not _is(section[key], kind):
            _fail(where, prefix + key, f"is {type(section[key]).__name__}, expected {_NAMES[kind]}")
    if closed:
        extra = [k for k in section if k not in spec]
        if extra:
            _fail(where, prefix + extra[0], f"is not part of the schema; documented fields: "
                                            f"{', '.join(spec)}")


def _metrics(where: str, prefix: str, values: dict) -> None:
    if not values:
        _fail(where, prefix.rstrip("."), "holds no metric")
    for name, v in values.items():
        if not _is(v, Real):
            _fail(where, prefix + name, f"is {type(v).__name__}, expected a number")


def _stage(where: str, prefix: str, stage: str, section: dict) -> None:
    _fields(where, prefix, section, STAGE, closed=True)
    if section["stage"] != stage:
        _fail(where, prefix + "stage", f"is {section['stage']!r} under {stage!r}")
    if section["num_users"] < 0:
        _fail(where, prefix + "num_users", "is negative")
    for proto in (FULL, SAMPLED):
        if proto in section:
            _metrics(where, f"{prefix}{proto}.", section[proto])


def validate_results(record, where: str) -> None:
    """Raise RecError naming `where` and the first missing or ill-typed field of `record` (a
    results.json of a model run); return None when it follows the schema."""
    if not isinstance(record, dict):
        _fail(where, "(top level)", f"is {type(record).__name__}, expected an object")
    _fields(where, "", record, TOP, closed=True)
    models = record["models"]
    if not models:
        _fail(where, "models", "is empty")
    for name, stages in models.items():
        if not isinstance(stages, dict):
            _fail(where, f"models.{name}", f"is {type(stages).__name__}, expected an object")
        _fields(where, f"models.{name}.", stages, {s: (dict, True) for s in STAGES}, closed=True)
        for s in STAGES:
            _stage(where, f"models.{name}.{s}.", s, stages[s])
    first = next(iter(models))
    if record["model"] != first:
        _fail(where, "model", f"is {record['model']!r} but the first entry of models is {first!r}")
    for s in STAGES:
        if record[s] != models[first][s]:
            _fail(where, s, f"differs from models.{first}.{s} (the top level repeats the first model)")
    _fields(where, "protocol.", record["protocol"], PROTOCOL, closed=False)
    if not all(_is(k, int) for k in record["protocol"]["ks"]):
        _fail(where, "protocol.ks", "holds a value that is not an integer")
    _fields(where, "dataset.", record["dataset"], DATASET, closed=True)
    for key, spec in (("params", PARAMS), ("training", TRAINING), ("timing", TIMING),
                      ("semantic_ids", SEMANTIC_IDS)):
        if key in record:
            _fields(where, f"{key}.", record[key], spec, closed=False)
    if "training" in record and not {"best_epoch", "best_step"} & set(record["training"]):
        _fail(where, "training.best_epoch", "is missing (an epoch trainer writes best_epoch, "
                                            "a step trainer best_step)")
    if "notes" in record and not all(isinstance(n, str) for n in record["notes"]):
        _fail(where, "notes", "holds a value that is not a string")
