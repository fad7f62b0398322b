"""Top-K recommendations from a finished OneRec run, by constrained beam search.

    python scripts/recommend.py --onerec_run runs/q/runs/onerec/seed0 --user 17 --k 10
    python scripts/recommend.py --onerec_run RUN --titles "Toy Story (1995)" "Heat (1995)"
    python scripts/recommend.py --onerec_run RUN --scorer_run SASREC_RUN --items 1 32 --k 5
    python scripts/recommend.py --onerec_run RUN --batch histories.jsonl --output recs.jsonl

Batch input: JSON lines with one of {"user": id} | {"items": [ids]} | {"titles": [titles]}.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.errors import RecError  # noqa: E402


def _args():
    p = argparse.ArgumentParser(description="Recommend items with a trained OneRec run.")
    p.add_argument("--onerec_run", required=True, help="run dir of scripts/train_onerec.py")
    p.add_argument("--scorer_run", default=None, help="optional run dir of scripts/train_sasrec.py")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--user", help="user id of the source files; history = all their interactions")
    g.add_argument("--items", nargs="+", help="history as item ids of the source files, oldest first")
    g.add_argument("--titles", nargs="+", help="history as titles (case-insensitive), oldest first")
    g.add_argument("--batch", help="JSON-lines file of histories")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--output", help="with --batch: JSON-lines output file (default stdout)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args()


def _one(rec, q: dict, k: int) -> dict:
    if "user" in q:
        return rec.for_user(q["user"], k)
    if "items" in q or "titles" in q:
        return rec.for_history(item_ids=q.get("items", ()), titles=q.get("titles", ()), k=k)
    raise RecError(f"batch line {json.dumps(q)} has none of the keys user / items / titles")


def _check_query(q, where: str) -> dict:
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


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise RecError(f"{path}: batch file not found")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the batch "
                       "file as UTF-8 JSON lines") from None


def _write_output(output: str, text: str) -> None:
    from retrieval.cli import os_reason
    from retrieval.io import write_text
    try:
        write_text(output, text)
    except OSError as e:
        raise RecError(f"cannot write --output {output} ({os_reason(e.errno, e.strerror)}); "
                       "give a file path in a "
                       "folder you can write to") from None


def main() -> None:
    args = _args()
    from retrieval.cli import error_line
    try:
        if args.output is not None and Path(args.output).is_dir():
            raise RecError(f"--output {args.output} is a folder; give a file path, e.g. "
                           f"{Path(args.output) / 'recs.jsonl'}")
        from onerec.recommend import Recommender, format_table
        if args.batch:                         # read and check the whole file before the model loads
            path = Path(args.batch)
            queries = []
            for n, line in enumerate(_read_lines(path), 1):
                if not line.strip():
                    continue
                try:
                    q = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecError(f"{path}:{n}: not valid JSON ({e})") from None
                queries.append(_check_query(q, f"{path}:{n}"))
        rec = Recommender(args.onerec_run, args.scorer_run)
        if args.batch:
            out_lines = []
            for q in queries:
                res = _one(rec, q, args.k)
                out_lines.append(json.dumps({"query": q, **{m: [asdict(r) for r in rows]
                                                            for m, rows in res.items()}}))
            text = "\n".join(out_lines) + "\n"
            if args.output:
                _write_output(args.output, text)
            else:
                sys.stdout.write(text)
            return
        q = {"user": args.user} if args.user else {"items": args.items} if args.items else \
            {"titles": args.titles}
        res = _one(rec, q, args.k)
        if args.json:
            print(json.dumps({m: [asdict(r) for r in rows] for m, rows in res.items()}, indent=2))
        else:
            print(format_table(res))
    except Exception as e:                     # noqa: BLE001  (one line: exit 2 user error, 1 bug)
        line, code = error_line(e)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    main()
