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


def main() -> None:
    args = _args()
    try:
        from onerec.recommend import Recommender, format_table
        from retrieval.io import write_text
        rec = Recommender(args.onerec_run, args.scorer_run)
        if args.batch:
            path = Path(args.batch)
            if not path.is_file():
                raise RecError(f"{path}: batch file not found")
            out_lines = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    q = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecError(f"{path}:{n}: not valid JSON ({e})") from None
                if not isinstance(q, dict):
                    raise RecError(f"{path}:{n}: each line must be a JSON object")
                res = _one(rec, q, args.k)
                out_lines.append(json.dumps({"query": q, **{m: [asdict(r) for r in rows]
                                                            for m, rows in res.items()}}))
            text = "\n".join(out_lines) + "\n"
            if args.output:
                write_text(args.output, text)
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
    except RecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
