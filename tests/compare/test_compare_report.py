"""scripts/compare.py end to end on tiny synthetic data (two seeds, two runs at a time), the report it
writes, and scripts/recommend.py on the OneRec run it trained."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reliability_cases import ONEREC_TINY, SCORER_TINY, SID_TINY, SYN, env

pytestmark = pytest.mark.slow  # every test runs the scripts in subprocesses

REPO = Path(__file__).resolve().parents[2]
DATA = ["include 'configs/synthetic/data.gin'", *SYN]


def _gin(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _script(name: str, args: list[str], cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{name}", *args], cwd=REPO, env=env(cache),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    cache, cfg, out = root / "cache", root / "cfg", root / "report"
    cfg.mkdir()
    data = _gin(cfg / "data.gin", DATA)
    sid = _gin(cfg / "sid.gin", ["include 'configs/base/semantic_ids.gin'", f"include '{data}'", *SID_TINY])
    onerec = _gin(cfg / "onerec.gin", ["include 'configs/synthetic/onerec.gin'", f"include '{data}'",
                                       *ONEREC_TINY, "OneRecTrainer.max_minutes=0"])
    sasrec = _gin(cfg / "sasrec.gin", ["include 'configs/synthetic/sasrec-ce.gin'", f"include '{data}'",
                                       *SCORER_TINY])
    baseline = _gin(cfg / "baseline.gin", ["include 'configs/synthetic/baseline.gin'", f"include '{data}'"])
    compare = _gin(cfg / "compare.gin", [
        f"include '{data}'", "include 'configs/base/eval.gin'", "Evaluator.progress = False",
        f"Comparison.data_gin = '{data}'", "Comparison.seeds = (0, 1)", f"Comparison.semantic_ids = ['{sid}']",
        f"Comparison.generative = {{'onerec': ['{onerec}']}}",
        f"Comparison.scorers = {{'sasrec': ['{sasrec}']}}",
        f"Comparison.baselines = ['{baseline}']", "Comparison.jobs = 2",
        "Comparison.references = {'a paper': {'ndcg@10': 0.5, 'hr@10': 0.75, 'model': 'sasrec'}, 'a target': {'mrr': 0.1}}",
        "Comparison.references_note = 'Published on another split.'"])
    proc = _script("compare.py", ["--gin_file", compare, "--run_dir", str(out)], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "cache": cache, "out": out, "compare": compare, "stdout": proc.stdout}


def test_report_files_are_all_there(compared):
    out = compared["out"]
    record = json.loads((out / "results.json").read_text())
    assert (out / "report.md").is_file()
    assert record["plots"] and all((out / p).is_file() and (out / p).stat().st_size > 1000
                                   for p in record["plots"])
    for model in ("semantic-ids", "onerec", "sasrec"):
        for seed in (0, 1):
            assert (out / "runs" / model / f"seed{seed}" / "results.json").is_file()
    assert set(record["test"]["full"]) == {"onerec", "sasrec", "popularity", "cooccurrence"}
    assert record["test"]["full"]["sasrec"]["ndcg@10"][2] == 2            # two seeds aggregated
    assert record["paired_test"]["generative"] == "onerec" and record["paired_test"]["scorer"] == "sasrec"
    assert 0.0 <= record["paired_test"]["t_p_value"] <= 1.0
    # the report names the command that regenerates it
    assert record["command"].startswith("python ") and "scripts/compare.py --gin_file" in record["command"]
    assert f"`{record['command']}`" in (out / "report.md").read_text()


def test_markdown_numbers_equal_results_json(compared):
    out = compared["out"]
    record = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    section = md.split("## Test — full ranking")[1].split("\n## ")[0]
    header = next(ln for ln in section.splitlines() if ln.startswith("| model"))
    cols = [c.strip() for c in header.strip("|").split("|")][2:]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    assert len(rows) == len(record["test"]["full"])
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        model, cells = cells[0], cells[2:]
        for col, cell in zip(cols, cells):
            if cell == "–":
                assert col not in record["test"]["full"][model]
                continue
            mean, std = (float(x) for x in re.findall(r"[-\d.]+", cell.replace("±", " "))[:2])
            want = record["test"]["full"][model][col]
            assert mean == pytest.approx(want[0], abs=5e-5) and std == pytest.approx(want[1], abs=5e-5)
    # the per-seed runs are what the table aggregates
    per_seed = [json.loads((out / "runs/sasrec" / f"seed{s}/results.json").read_text())["test"]["full"]["ndcg@10"]
                for s in (0, 1)]
    assert record["test"]["full"]["sasrec"]["ndcg@10"][0] == pytest.approx(np.mean(per_seed))
    assert record["test"]["full"]["sasrec"]["ndcg@10"][1] == pytest.approx(np.std(per_seed, ddof=1))


def test_reference_numbers_stand_beside_the_best_measured(compared):
    out = compared["out"]
    record = json.loads((out / "results.json").read_text())
    assert record["references"] == {"numbers": {"a paper": {"ndcg@10": 0.5, "hr@10": 0.75, "model": "sasrec"},
                                                "a target": {"mrr": 0.1}},
                                    "note": "Published on another split."}
    md = (out / "report.md").read_text()
    section = md.split("## Reference numbers", 1)[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert rows[0] == "| reference | hr@10 | ndcg@10 | mrr |"
    full = record["test"]["full"]
    assert rows[2] == "| a paper | 0.75 | 0.5 | – |"
    assert rows[3] == (f"| ↳ measured here: sasrec | {full['sasrec']['hr@10'][0]:.4f} | "
                       f"{full['sasrec']['ndcg@10'][0]:.4f} | – |")
    assert rows[4] == "| a target | – | – | 0.1 |"
    best = max(full, key=lambda m: full[m]["ndcg@10"][0])
    assert f"{full[best]['ndcg@10'][0]:.4f} ({best})" in rows[5].split("|")[3]
    assert "Published on another split." in section


def test_markdown_tables_have_no_blank_line_inside(compared):
    """A blank line ends a markdown table: every table's rows must follow each other directly."""
    md = (compared["out"] / "report.md").read_text()
    assert "|\n\n|" not in md
    cost = md.split("## Cost", 1)[1].split("\n\n")[1].splitlines()   # the whole cost table
    assert cost[0].startswith("| model |") and cost[1].startswith("|---")
    assert {row.split("|")[1].strip() for row in cost[2:]} >= {"onerec", "sasrec"}


def test_a_run_on_another_split_is_refused(compared, tmp_path):
    """Mixing a run of another dataset into a report is a config error, not a silent bad table."""
    import shutil

    bad = tmp_path / "report"
    shutil.copytree(compared["out"] / "runs", bad / "runs")
    res = bad / "runs/sasrec/seed1/results.json"
    record = json.loads(res.read_text())
    record["dataset"]["fingerprint"] = "0000000000000000"
    res.write_text(json.dumps(record))
    proc = _script("compare.py", ["--gin_file", compared["compare"], "--run_dir", str(bad)], compared["cache"])
    assert proc.returncode == 2
    assert "run on dataset split 0000000000000000" in proc.stderr and "Traceback" not in proc.stderr
    assert not (bad / "report.md").exists()


def test_rerun_reuses_finished_runs(compared):
    proc = _script("compare.py", ["--gin_file", compared["compare"], "--run_dir", str(compared["out"])],
                   compared["cache"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reused") == 7 and "running" not in proc.stdout     # 2x3 runs + baselines


def test_recommend_by_title_item_and_user_with_scorer_beside(compared):
    from retrieval.compare.recommend import load_recommender
    from retrieval.core.errors import RecError

    out = compared["out"]
    rec = load_recommender(out / "runs/onerec/seed0", out / "runs/sasrec/seed0")
    cat = rec.split.catalogue
    titles = [str(t) for t in cat.titles]
    unique = [i for i in range(1, cat.num_items + 1)
              if sum(t.strip().lower() == titles[i].strip().lower() for t in titles[1:]) == 1][:2]
    assert len(unique) == 2
    by_items = rec.for_history(item_ids=[cat.raw_ids[i] for i in unique], k=5)
    assert set(by_items) == {"generative", "scorer"}
    for rows in by_items.values():
        assert 1 <= len(rows) <= 5
        scores = [r.score for r in rows]
        assert scores == sorted(scores, reverse=True)
        assert all(r.title == titles[r.item] and r.item not in unique for r in rows)
    # the same history given by titles, in other letter cases, gives the same recommendations
    by_titles = rec.for_history(titles=[titles[unique[0]].upper(), f"  {titles[unique[1]].lower()} "], k=5)
    assert [r.item for r in by_titles["generative"]] == [r.item for r in by_items["generative"]]
    with pytest.raises(RecError, match="no item titled"):
        rec.item_for_title("certainly not a title of this catalogue")
    user = rec.split.user_raw_ids[1]
    recs = rec.for_user(user, k=3)["generative"]
    _, history = rec.user_history(user)
    assert recs and not {r.item for r in recs} & set(history.tolist())     # history excluded


def test_recommend_batch_mode_writes_json_lines(compared, tmp_path):
    from onerec.recommend import Recommender

    out = compared["out"]
    split = Recommender(out / "runs/onerec/seed0").split
    queries = [{"items": [str(split.catalogue.raw_ids[1]), str(split.catalogue.raw_ids[2])]},
               {"user": str(split.user_raw_ids[3])}]
    batch = tmp_path / "h.jsonl"
    batch.write_text(json.dumps(queries[0]) + "\n\n" + json.dumps(queries[1]) + "\n")
    target = tmp_path / "recs.jsonl"
    proc = _script("recommend.py", ["--onerec_run", str(out / "runs/onerec/seed0"), "--batch", str(batch),
                                    "--k", "4", "--output", str(target)], compared["cache"])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    assert [x["query"] for x in lines] == queries
    assert all(1 <= len(x["generative"]) <= 4 for x in lines)


def test_recommend_explains_in_batch_mode_and_draws_the_attention(compared, tmp_path):
    from onerec.recommend import Recommender

    out = compared["out"]
    run = out / "runs/onerec/seed0"
    assert (out / "runs/semantic-ids/seed0/code_names.json").is_file()        # stored by stage 1
    split = Recommender(run).split
    batch = tmp_path / "h.jsonl"
    batch.write_text(json.dumps({"user": str(split.user_raw_ids[3])}) + "\n")
    target = tmp_path / "why.jsonl"
    proc = _script("recommend.py", ["--onerec_run", str(run), "--batch", str(batch), "--k", "4",
                                    "--explain", "--output", str(target)], compared["cache"])
    assert proc.returncode == 0, proc.stderr
    line = json.loads(target.read_text())
    assert [e["item"] for e in line["explanations"]] == [r["item"] for r in line["generative"]]
    for e in line["explanations"]:
        assert np.prod(e["level_probs"]) == pytest.approx(e["probability"], rel=1e-6)
        assert len(e["names"]) == 2 and all(isinstance(n, str) for n in e["names"])
    png = tmp_path / "why.png"
    proc = _script("recommend.py", ["--onerec_run", str(run), "--user", str(split.user_raw_ids[3]),
                                    "--k", "3", "--explain", "--explain_plot", str(png)], compared["cache"])
    assert proc.returncode == 0, proc.stderr
    assert "why (generative):" in proc.stdout and "level 1: code" in proc.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
