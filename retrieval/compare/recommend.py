"""Recommendations from a OneRec run with a scorer run's beside them (scripts/recommend.py): the
generator's half lives in onerec.recommend, the scorer's in retrieval.scorers.recommend, and this
module composes them and answers one query or a JSON-lines batch of them.

    rec = load_recommender("runs/beauty-onerec", scorer_run="runs/beauty-sasrec")
    rec.for_history(titles=["Toy Story (1995)"], k=10)     # {"generative": [...], "scorer": [...]}
    recommend("runs/beauty-onerec", batch="histories.jsonl", output="recs.jsonl")

Batch input: JSON lines with one of {"user": id} | {"items": [ids]} | {"titles": [titles]}.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from onerec.recommend import Recommender, format_explanations, format_table
from retrieval.core.cli import os_reason
from retrieval.core.errors import RecError
from retrieval.core.io import write_text
from retrieval.scorers.recommend import ScorerRun


def load_recommender(onerec_run, scorer_run=None) -> Recommender:
    """A OneRec run's Recommender, with the scorer run's top-K beside it when one is given."""
    return Recommender(onerec_run, beside=[ScorerRun(scorer_run)] if scorer_run is not None else [])


def _one(rec: Recommender, q: dict, k: int, **explain) -> dict:
    if "user" in q:
        return rec.for_user(q["user"], k, **explain)
    if "items" in q or "titles" in q:
        return rec.for_history(item_ids=q.get("items", ()), titles=q.get("titles", ()), k=k, **explain)
    raise RecError(f"batch line {json.dumps(q)} has none of the keys user / items / titles")


def check_query(q, where: str) -> dict:
    """A batch line's object, its fields checked: a string "123" is not the list ["1", "2", "3"]."""
    if not isinstance(q, dict):
        raise RecError(f"{where}: each line must be a JSON object, e.g. {{\"items\": [1, 32]}}")
    kinds = {"items": ((int, str), "item ids", '{"items": [1, 32]}'),
             "titles": ((str,), "titles", '{"titles": ["Heat (1995)"]}')}
    for key, (types, what, example) in kinds.items():
        if key in q and (not isinstance(q[key], list)
                         or any(isinstance(v, bool) or not isinstance(v, types) for v in q[key])):
            raise RecError(f"{where}: {key!r} must be a list of {what}, got {json.dumps(q[key])}; "
                           f"write e.g. {example}")
    if "user" in q and (isinstance(q["user"], bool) or not isinstance(q["user"], (int, str))):
        raise RecError(f"{where}: 'user' must be one user id, got {json.dumps(q['user'])}; "
                       'write e.g. {"user": 17}')
    return q


def read_queries(path: Path) -> list[dict]:
    """The checked queries of a JSON-lines batch file (blank lines skipped)."""
    if not path.is_file():
        raise RecError(f"{path}: batch file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the batch "
                       "file as UTF-8 JSON lines") from None
    queries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecError(f"{path}:{n}: not valid JSON ({e})") from None
        queries.append(check_query(q, f"{path}:{n}"))
    return queries


def _write_output(output: str, text: str) -> None:
    try:
        write_text(output, text)
    except OSError as e:
        raise RecError(f"cannot write --output {output} ({os_reason(e.errno, e.strerror)}); "
                       "give a file path in a "
                       "folder you can write to") from None


def _as_json(res: dict) -> dict:
    return {m: [asdict(r) for r in rows] for m, rows in res.items()}


def recommend(onerec_run, scorer_run=None, *, user=None, items=None, titles=None, batch=None,
              k: int = 10, output=None, as_json: bool = False, explain: bool = False,
              explain_plot=None) -> None:
    """Print the top-k for one history (a user, item ids or titles: exactly one), as a table or
    JSON; or, with `batch`, one JSON line per query of that file, into `output` or stdout. The
    batch file is read and checked whole before the models load. explain: add why each
    generative item was chosen (onerec.explain); explain_plot: a PNG of the generator's attention
    over the history (one history only)."""
    if explain_plot is not None and batch:
        raise RecError("--explain_plot draws one history; use it with --user, --items or --titles")
    if explain_plot is not None and Path(explain_plot).is_dir():
        raise RecError(f"--explain_plot {explain_plot} is a folder; give a file path, e.g. "
                       f"{Path(explain_plot) / 'attention.png'}")
    if output is not None and Path(output).is_dir():
        raise RecError(f"--output {output} is a folder; give a file path, e.g. "
                       f"{Path(output) / 'recs.jsonl'}")
    queries = read_queries(Path(batch)) if batch else None
    rec = load_recommender(onerec_run, scorer_run)
    if batch:
        out_lines = []
        for q in queries:
            out_lines.append(json.dumps({"query": q, **_as_json(_one(rec, q, k, explain=explain))}))
        text = "\n".join(out_lines) + "\n"
        if output:
            _write_output(output, text)
        else:
            sys.stdout.write(text)
        return
    q = {"user": user} if user else {"items": items} if items else {"titles": titles}
    res = _one(rec, q, k, explain=explain, attention_plot=explain_plot)
    if as_json:
        print(json.dumps(_as_json(res), indent=2))
    else:
        print(format_table(res))
        if explain:
            print(format_explanations(res))
    if explain_plot is not None:
        print(f"attention plot: {explain_plot}", file=sys.stderr)
