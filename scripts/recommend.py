"""Top-K recommendations from a finished OneRec run, by constrained beam search.

    python scripts/recommend.py --onerec_run runs/q/runs/onerec/seed0 --user 17 --k 10
    python scripts/recommend.py --onerec_run RUN --titles "Toy Story (1995)" "Heat (1995)"
    python scripts/recommend.py --onerec_run RUN --scorer_run SASREC_RUN --items 1 32 --k 5
    python scripts/recommend.py --onerec_run RUN --batch histories.jsonl --output recs.jsonl
    python scripts/recommend.py --onerec_run RUN --user 17 --explain --explain_plot why.png

Batch input: JSON lines with one of {"user": id} | {"items": [ids]} | {"titles": [titles]}.
"""
from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--explain", action="store_true",
                   help="say why: semantic-ID path with code names, per-level probabilities, "
                        "history items sharing the prefix (JSON lines in batch mode)")
    p.add_argument("--explain_plot", help="PNG file: the generator's attention over the history")
    return p.parse_args()


def main() -> None:
    args = _args()
    from retrieval.core.cli import error_line
    try:
        from retrieval.compare.recommend import recommend
        recommend(args.onerec_run, args.scorer_run, user=args.user, items=args.items,
                  titles=args.titles, batch=args.batch, k=args.k, output=args.output,
                  as_json=args.json, explain=args.explain, explain_plot=args.explain_plot)
    except Exception as e:                     # noqa: BLE001  (one line: exit 2 user error, 1 bug)
        line, code = error_line(e)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    main()
