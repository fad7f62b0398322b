"""The comparison report: tables (one per protocol), a paired test, timing, plots, results.json.

Reads only what the runs wrote (results.json and ranks.safetensors in the one format of
docs/results-format.md, metrics.jsonl for curves) plus the split itself (for bucket plots), so a
report can be rebuilt from finished runs at any time. A run that does not follow the format (one
written before it) is refused with a one-line error naming the run and the field.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from retrieval.compare.comparison import RunSpec
from retrieval.data.types import SplitData
from retrieval.evaluation.evaluator import FULL, SAMPLED
from retrieval.evaluation.metrics import metric_names, per_user_metric
from retrieval.core.errors import RecError
from retrieval.core.io import read_json, write_json, write_text
from retrieval.evaluation.report import load_result
from retrieval.evaluation.schema import validate_results

METRICS = metric_names(auc=True)
TABLE_COLS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "hr@50",
              "ndcg@50", "mrr", "auc", "gauc"]
AUC_NOTE = ("AUC = mean over users of 1 - (rank - 1) / (C - 1), rank the target's 1-based pessimistic "
            "rank among the user's C candidates (protocol of the table; history excluded per the "
            "protocol); GAUC = the same per-user AUCs weighted by the user's number of training "
            "interactions. A generator's target outside its beam gets the mean rank of the items it "
            "did not rank (random-order expectation), so its AUC is about 0.5 on a miss.")


def _test_ranks(run_dir: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(users, full-ranking test ranks) of one model of a run, ordered by user."""
    r = load_result(run_dir, model, "test")
    order = np.argsort(r.users, kind="stable")
    return r.users[order], r.ranks[FULL][order]


def _read_run(rd: Path) -> dict:
    """A run's results.json, refused unless it follows the one schema (docs/results-format.md)."""
    res = read_json(rd / "results.json")
    try:
        validate_results(res, str(rd / "results.json"))
    except RecError as e:
        raise RecError(f"{e}; delete {rd} so the comparison runs it again") from None
    return res


def labelled_models(spec: RunSpec, res: dict) -> list[tuple[str, str]]:
    """[(report label, model key in the run's results.json)]: a baseline run holds several models,
    each reported under its own name; any other run one, reported under the spec's model name."""
    if spec.kind == "baseline":
        return [(name, name) for name in res["models"]]
    return [(spec.model, res["model"])]


def collect(specs: list[RunSpec], root: Path, fingerprint: str | None = None) -> dict:
    """{model: {"kind", "runs": [per-seed record]}} for every evaluated model.

    fingerprint: the split the report is about; a run on any other split is refused, since its
    numbers (and per-user ranks) would not be comparable.
    """
    models: dict = {}
    for spec in specs:
        if spec.kind == "semantic_ids":
            continue
        rd = spec.run_dir(root)
        res = _read_run(rd)
        got = res["dataset"]["fingerprint"]
        if fingerprint is not None and got != fingerprint:
            raise RecError(f"{rd / 'results.json'}: run on dataset split {got} but the comparison's "
                           f"Comparison.data_gin gives {fingerprint}; every config of the comparison "
                           "must include the same dataset config")
        for label, name in labelled_models(spec, res):
            rec = models.setdefault(label, {"kind": spec.kind, "runs": []})
            rec["runs"].append({
                "seed": spec.seed, "run_dir": str(rd),
                "valid": res["models"][name]["valid"], "test": res["models"][name]["test"],
                "timing": res.get("timing"), "params": res.get("params", {}).get("num_parameters"),
                "config_hash": res["config_hash"], "ranks": _test_ranks(rd, name),
                "curve": _curve(rd / "metrics.jsonl")})
    return models


def _curve(path: Path) -> list[tuple[float, float]]:
    """(step, validation NDCG@10) points of the evaluation records of a metrics.jsonl."""
    if not path.is_file():
        return []
    pts = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "valid_ndcg@10" in r:
            pts.append((float(r["step"]), float(r["valid_ndcg@10"])))
    return pts


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(models: dict, stage: str = "test") -> dict:
    """{protocol: {model: {metric: [mean, std, n_seeds]}}}."""
    out: dict = {FULL: {}, SAMPLED: {}}
    for name, rec in models.items():
        for proto in (FULL, SAMPLED):
            vals = [r[stage][proto] for r in rec["runs"] if proto in r[stage]]
            if not vals:
                continue
            out[proto][name] = {m: [*mean_std([v[m] for v in vals]), len(vals)]
                                for m in METRICS if m in vals[0]}
    return out


def paired_best(models: dict, table: dict, metric: str = "ndcg@10") -> dict | None:
    """Paired t-test and Wilcoxon on per-user `metric` (averaged over seeds): best generative vs
    best scorer by mean test full-ranking `metric`."""
    from scipy import stats

    def best(kind):
        cands = [m for m, r in models.items() if r["kind"] == kind and m in table[FULL]]
        return max(cands, key=lambda m: table[FULL][m][metric][0]) if cands else None

    g, s = best("generative"), best("scorer")
    if g is None or s is None:
        return None

    def per_user(name):
        arrs = [r["ranks"] for r in models[name]["runs"]]
        users = arrs[0][0]
        return users, np.mean([per_user_metric(rk, metric) for _, rk in arrs], axis=0)

    ug, xg = per_user(g)
    us, xs = per_user(s)
    if not np.array_equal(ug, us):
        return {"generative": g, "scorer": s, "error": "the two models were evaluated on different users"}
    t = stats.ttest_rel(xg, xs) if np.any(xg != xs) else None
    w = stats.wilcoxon(xg, xs) if np.any(xg != xs) else None
    return {"metric": metric, "protocol": FULL, "stage": "test", "users": int(len(xg)),
            "generative": g, "scorer": s, "mean_generative": float(xg.mean()),
            "mean_scorer": float(xs.mean()), "mean_diff": float((xg - xs).mean()),
            "t_statistic": float(t.statistic) if t else 0.0, "t_p_value": float(t.pvalue) if t else 1.0,
            "wilcoxon_statistic": float(w.statistic) if w else 0.0,
            "wilcoxon_p_value": float(w.pvalue) if w else 1.0}


def timing_rows(models: dict, split: SplitData) -> dict:
    """Mean training seconds and inference seconds per 1,000 users of each model (a baseline run
    writes no timing). final_eval_seconds covers valid and test, so one stage is half of it."""
    rows = {}
    for name, rec in models.items():
        timed = [r["timing"] for r in rec["runs"] if r["timing"] is not None]
        rows[name] = {"train_s": float(np.mean([t["train_seconds_total"] for t in timed])) if timed else None,
                      "inference_s_per_1k_users": float(np.mean([t["final_eval_seconds"] / 2 for t in timed]))
                      * 1000 / split.num_users if timed else None,
                      "params": rec["runs"][0]["params"]}
    return rows


def _fmt_table(table: dict, cols: list[str]) -> str:
    if not table:
        return "_no model reports this protocol_\n"
    best = {c: max(v[c][0] for v in table.values() if c in v) for c in cols
            if any(c in v for v in table.values())}
    lines = ["| model | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, v in table.items():
        cells = []
        for c in cols:
            if c not in v:
                cells.append("–")
                continue
            m, s, _ = v[c]
            txt = f"{m:.4f} ± {s:.4f}"
            cells.append(f"**{txt}**" if np.isclose(m, best[c]) else txt)
        n = max(x[2] for x in v.values())
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(root: Path, specs: list[RunSpec], split: SplitData, protocol: dict,
                 commit: str, env: dict, command: str | None = None, references: dict | None = None,
                 references_note: str = "") -> dict:
    """Aggregate the finished runs of `specs` into root/results.json, report.md and plots/.
    references: {label: {metric: value}} not measured here (targets, published numbers), printed
    beside the best measured test value of each metric, with references_note under them."""
    models = collect(specs, root, split.fingerprint)
    table = aggregate(models, "test")
    valid_table = aggregate(models, "valid")
    test = paired_best(models, table)
    timing = timing_rows(models, split)
    sid = _semantic_id_stats(specs, root)
    plots = _plots(root / "plots", models, table, split, sid)
    record = {
        "dataset": {"name": split.name, "fingerprint": split.fingerprint, **split.stats()},
        "protocol": protocol, "git_commit": commit, "hardware": env, "command": command,
        "test": table, "valid": valid_table, "paired_test": test, "timing": timing,
        "semantic_ids": sid, "config_hashes": {m: sorted({r["config_hash"] for r in rec["runs"]})
                                               for m, rec in models.items()},
        "runs": {m: [r["run_dir"] for r in rec["runs"]] for m, rec in models.items()},
        "plots": plots,
        "references": {"numbers": dict(references or {}), "note": references_note},
    }
    write_json(root / "results.json", record)
    write_text(root / "report.md", _markdown(record))
    return record


def _semantic_id_stats(specs, root) -> list[dict]:
    out = []
    for s in specs:
        if s.kind == "semantic_ids":
            r = read_json(s.run_dir(root) / "results.json")
            out.append({"seed": s.seed, **{k: v for k, v in r.items() if k != "env"}})
    return out


def _markdown(r: dict) -> str:
    d, p = r["dataset"], r["protocol"]
    parts = [f"# Comparison report — {d['name']}\n",
             f"Dataset: {d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions "
             f"(fingerprint `{d['fingerprint']}`). Split: leave-one-out (last item = test, second last "
             f"= validation). Models selected on validation; test computed once.\n",
             f"Protocol: {json.dumps(p)}. **exclude_history = {p.get('exclude_history')}**. "
             f"Git commit `{r['git_commit']}`. Hardware: {r['hardware']}.\n",
             *([f"Regenerate (reuses finished runs): `{r['command']}`\n"] if r.get("command") else []),
             "## Test — full ranking (mean ± std over seeds; best per column in bold)\n",
             _fmt_table(r["test"][FULL], TABLE_COLS), f"\n{AUC_NOTE}\n",
             "\n## Test — sampled-100 (secondary protocol; scorers only)\n",
             _fmt_table(r["test"][SAMPLED], TABLE_COLS),
             "\n## Validation — full ranking\n", _fmt_table(r["valid"][FULL], TABLE_COLS)]
    if r.get("references", {}).get("numbers"):
        parts.append(_references_table(r["references"], r["test"][FULL]))
    t = r["paired_test"]
    parts.append("\n## Paired significance test (per-user test NDCG@10, full ranking)\n")
    if t is None:
        parts.append("Needs at least one generative and one scorer model.\n")
    elif "error" in t:
        parts.append(f"{t['generative']} vs {t['scorer']}: {t['error']}\n")
    else:
        parts.append(f"Best generative **{t['generative']}** ({t['mean_generative']:.4f}) vs best scorer "
                     f"**{t['scorer']}** ({t['mean_scorer']:.4f}) over {t['users']:,} users: mean "
                     f"difference {t['mean_diff']:+.4f}, paired t-test p = {t['t_p_value']:.3g}, "
                     f"Wilcoxon p = {t['wilcoxon_p_value']:.3g}.\n")
    f = lambda x, spec: format(x, spec) if x is not None else "–"   # noqa: E731
    rows = "".join(f"| {m} | {f(v['train_s'], '.1f')} | {f(v['inference_s_per_1k_users'], '.2f')} | "
                   f"{f(v['params'], ',')} |\n" for m, v in r["timing"].items())
    # one part per table: the join below separates parts by a blank line, which would end a table
    parts.append("\n## Cost\n\n| model | train time (s, mean) | inference (s / 1k users) | parameters |\n"
                 "|---|---|---|---|\n" + rows)
    if r["semantic_ids"]:
        parts.append("\n" + "".join(f"- Semantic IDs (seed {s['seed']}): " + json.dumps(
            {k: s[k] for k in ("tokenizer", "levels", "codebook_size", "collision_fraction",
                               "largest_group", "codebook_usage") if k in s}) + "\n"
            for s in r["semantic_ids"]))
    parts.append("\n## Plots\n\n" + "\n".join(f"![{Path(x).stem}]({x})" for x in r["plots"]) + "\n")
    parts.append("\n## Config hashes\n\n" + "\n".join(f"- {m}: {', '.join(h)}"
                                                     for m, h in r["config_hashes"].items()) + "\n")
    # Markdown needs a blank line between a paragraph and the heading or table after it.
    return "".join(p if p.endswith("\n\n") else p + "\n" if p.endswith("\n") else p for p in parts)


def _references_table(refs: dict, measured: dict) -> str:
    """Reference numbers (not measured here) in rows, each followed by the measured test means of
    the model it names (if it names one), and the best measured test mean of each metric in the last
    row, named by its model."""
    numbers = refs["numbers"]
    cols = [c for c in METRICS if any(c in v for v in numbers.values())]
    lines = ["\n## Reference numbers (not measured in this report; test, full ranking)\n",
             "| reference | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for label, v in numbers.items():
        lines.append(f"| {label} | " + " | ".join(f"{v[c]:.4g}" if c in v else "–" for c in cols) + " |")
        if "model" in v:     # the compared model this reference stands for, measured here
            got = measured.get(v["model"], {})
            lines.append(f"| ↳ measured here: {v['model']} | " + " | ".join(
                f"{got[c][0]:.4f}" if c in v and c in got else "–" for c in cols) + " |")
    cells = []
    for c in cols:
        have = {m: v[c][0] for m, v in measured.items() if c in v}
        best = max(have, key=have.get) if have else None
        cells.append(f"{have[best]:.4f} ({best})" if best else "–")
    lines.append("| **best measured here** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + (f"\n{refs['note']}\n" if refs.get("note") else "")


def _plots(out: Path, models: dict, table: dict, split: SplitData, sid: list[dict]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")

    names = list(table[FULL])
    if names:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
        x = np.arange(len(names))
        for j, m in enumerate(("hr@10", "ndcg@10")):
            ax.bar(x + (j - 0.5) * 0.38, [table[FULL][n][m][0] for n in names], 0.38,
                   yerr=[table[FULL][n][m][1] for n in names], capsize=3, label=m)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title("Test, full ranking (mean ± std over seeds)")
        ax.legend()
        save(fig, "metrics.png")

    curves = {m: rec["runs"][0]["curve"] for m, rec in models.items() if rec["runs"][0]["curve"]}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, pts in curves.items():
            a = np.asarray(pts)
            ax.plot(a[:, 0] / max(1.0, a[:, 0].max()), a[:, 1], marker=".", label=m)
        ax.set_xlabel("training progress (fraction of the run)")
        ax.set_ylabel("validation NDCG@10")
        ax.legend(fontsize=7)
        save(fig, "valid_curves.png")

    usage = [s for s in sid if "codebook_usage" in s]
    if usage:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        u = np.asarray(usage[0]["codebook_usage"], dtype=float)
        ax.bar(np.arange(1, len(u) + 1), u)
        ax.set_xlabel("level")
        ax.set_ylabel("fraction of codes used")
        ax.set_ylim(0, 1.05)
        save(fig, "codebook_usage.png")

    # Per-user buckets: test-input history length and target popularity (training counts).
    if models:
        lengths = split.train_lengths + 1
        pop = np.bincount(split.train_items, minlength=split.num_items + 1)[split.test_item]
        for label, values, fname in (("history length", lengths, "by_history_length.png"),
                                     ("target popularity (training count)", pop, "by_popularity.png")):
            edges = np.unique(np.quantile(values, [0, .25, .5, .75, 1.0]))
            bucket = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
            fig, ax = plt.subplots(figsize=(6, 4))
            width = 0.8 / len(models)
            for j, (m, rec) in enumerate(models.items()):
                users, rk = rec["runs"][0]["ranks"]
                nd = per_user_metric(rk, "ndcg@10")
                b = bucket[users]
                means = [nd[b == i].mean() if np.any(b == i) else 0 for i in range(len(edges) - 1)]
                ax.bar(np.arange(len(means)) + j * width, means, width, label=m)
            ax.set_xticks(np.arange(len(edges) - 1) + 0.4,
                          [f"{edges[i]:.0f}–{edges[i + 1]:.0f}" for i in range(len(edges) - 1)])
            ax.set_xlabel(label)
            ax.set_ylabel("test NDCG@10 (seed of first run)")
            ax.legend(fontsize=7)
            save(fig, fname)
    return written


def hardware() -> str:
    import os
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"
