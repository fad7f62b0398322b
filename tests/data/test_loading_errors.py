"""Bad input gives one clear line (RecError) naming the file and the fix, and leaves nothing behind."""
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retrieval.data import load_split
from retrieval.data.download import Archive, download_movielens, extract
from retrieval.data.sources_amazon import AmazonSource
from retrieval.data.sources_movielens import (MovieLens1MSource, MovieLens100KSource,
                                              MovieLensLatestSmallSource)
from retrieval.data.sources_text import TextSource
from retrieval.data.split import leave_one_out
from retrieval.core.errors import RecError

from reliability_cases import user_error_line

REPO = Path(__file__).resolve().parents[2]
MOVIES = "movieId,title,genres\n1,A,Drama\n2,B,Comedy\n3,C,Drama\n"


def ml_folder(tmp_path, ratings: str | bytes, movies: str = MOVIES) -> Path:
    d = tmp_path / "movielens-latest-small"
    d.mkdir(exist_ok=True)
    data = ratings.encode() if isinstance(ratings, str) else ratings
    (d / "ratings.csv").write_bytes(data)
    (d / "movies.csv").write_text(movies)
    return d


def load_ml(d: Path):
    return MovieLensLatestSmallSource(path=str(d)).load()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- through the loaders ---------------------------------------------------------------------

def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(RecError) as e:
        MovieLensLatestSmallSource(path=str(tmp_path / "nowhere")).input_fingerprint()
    msg = one_line(e)
    assert "ratings.csv, movies.csv not found in" in msg and str(tmp_path / "nowhere") in msg
    assert "SEMID_DATA_ROOT" in msg and "--download" in msg


def test_ml_1m_without_ratings_dat_or_gz_names_both(tmp_path):
    (tmp_path / "movies.dat").write_text("1::A::Drama\n")
    with pytest.raises(RecError, match=r"neither ratings\.dat nor ratings\.dat\.gz found"):
        MovieLens1MSource(path=str(tmp_path)).load()


def test_wrong_separator_is_named(tmp_path):
    d = ml_folder(tmp_path, "userId;movieId;rating;timestamp\n1;1;4.0;1\n")
    with pytest.raises(RecError) as e:
        load_ml(d)
    msg = one_line(e)
    assert "ratings.csv" in msg and "comma-separated columns userId,movieId,timestamp" in msg
    assert "'userId;movieId;rating;timestamp'" in msg


def test_wrong_column_layout_is_named(tmp_path):
    d = ml_folder(tmp_path, "user,item,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(RecError, match=r"missing userId, movieId"):
        load_ml(d)


def test_ragged_rows_are_reported(tmp_path):
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,4.0\n")
    with pytest.raises(RecError, match=r"ratings\.csv: cannot parse .*Expected 4 columns, got 3"):
        load_ml(d)


def test_non_numeric_ids_are_named_with_column_and_value(tmp_path):
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,4.0,1\nalice,2,4.0,2\n")
    with pytest.raises(RecError) as e:
        load_ml(d)
    assert "column 'userId': non-numeric value 'alice'" in one_line(e)


def test_non_numeric_ids_in_other_formats(tmp_path):
    s = tmp_path / "s.txt"
    s.write_text("1 1 2 3\n2 4 x5 6\n")
    with pytest.raises(RecError, match=r"s\.txt line 2: bad id 'x5'"):
        AmazonSource(sequences_path=str(s)).load()
    t = tmp_path / "t.txt"
    t.write_text("1 2\nu3 4\n")
    with pytest.raises(RecError, match=r"t\.txt: line 2 \('u3 4'\); every line must hold 2 integers"):
        TextSource(path=str(t)).load()
    (tmp_path / "u.data").write_text("1\t1\t5\t10\n")
    (tmp_path / "u.item").write_text("x|A|d||u" + "|0" * 19 + "\n")
    with pytest.raises(RecError, match=r"u\.item: non-numeric movie id 'x'"):
        MovieLens100KSource(path=str(tmp_path)).load()


def test_empty_file_and_header_only_file(tmp_path):
    d = ml_folder(tmp_path, b"")
    with pytest.raises(RecError, match=r"ratings\.csv: the file is empty"):
        load_ml(d)
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n")
    with pytest.raises(RecError, match=r"ratings\.csv: the file has no data rows"):
        load_ml(d)
    t = tmp_path / "t.txt"
    t.write_text("")
    with pytest.raises(RecError, match=r"t\.txt: the file is empty"):
        TextSource(path=str(t)).load()


def test_wrong_number_of_fields_in_other_formats(tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("1 2 3 4\n")
    with pytest.raises(RecError, match=r"expected 2 or 3 whitespace-separated columns"):
        TextSource(path=str(t)).load()
    (tmp_path / "u.data").write_text("1\t1\t5\t10\n")
    (tmp_path / "u.item").write_text("1|A|d\n")
    with pytest.raises(RecError, match=r"u\.item: expected 24 '\|'-separated fields"):
        MovieLens100KSource(path=str(tmp_path)).load()
    items = tmp_path / "items.csv"
    items.write_text("id,title\n1,A\n")
    (tmp_path / "s.txt").write_text("1 1\n")
    with pytest.raises(RecError, match=r"items\.csv: expected comma-separated columns item_id,title"):
        AmazonSource(sequences_path=str(tmp_path / "s.txt"), items_path=str(items)).load()


def test_user_with_one_item_is_dropped_and_an_all_short_table_is_an_error(tmp_path):
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n"
                  "1,1,4,1\n2,1,4,1\n2,2,4,2\n2,3,4,3\n")       # user 1 has a single rating
    split = leave_one_out(load_ml(d), "tiny", k=0, fingerprint="x")
    assert split.user_raw_ids.tolist() == ["2"]
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,4,1\n2,2,4,1\n")
    with pytest.raises(RecError, match=r"no user has >= 3 interactions after 0-core filtering"):
        leave_one_out(load_ml(d), "tiny", k=0, fingerprint="x")


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(RecError, match=r"unknown dataset 'ml-20m'; choose one of: .*amazon-beauty.*ml-100k"):
        load_split("ml-20m")


def test_amazon_without_paths_says_which_gin_keys_to_set():
    with pytest.raises(RecError, match=r"bind AmazonSource\.sequences_path"):
        AmazonSource().input_fingerprint()


# ---- the download helper ----------------------------------------------------------------------

def zip_bytes(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("member", ["ml-100k/../../evil.txt", "/etc/evil.txt", "ml-100k/a/../../../x"])
def test_extraction_refuses_path_traversal(tmp_path, member):
    z = tmp_path / "bad.zip"
    z.write_bytes(zip_bytes({"ml-100k/u.data": "1\t1\t5\t1\n", member: "gotcha"}))
    out = tmp_path / "out"
    with pytest.raises(RecError, match=r"refusing unsafe archive member"):
        extract(z, out)
    assert not out.exists() and not (tmp_path / "evil.txt").exists()


def test_md5_mismatch_fails_and_leaves_nothing(tmp_path):
    data = zip_bytes({"ml-100k/u.data": "x", "ml-100k/u.item": "y"})
    z = tmp_path / "ml-100k.zip"
    z.write_bytes(data)
    arch = Archive(z.as_uri(), hashlib.md5(b"other").hexdigest(), None, ("u.data", "u.item"))
    out = tmp_path / "root" / "movielens-100k"
    with pytest.raises(RecError) as e:
        download_movielens("ml-100k", out, archive=arch)
    msg = one_line(e)
    assert f"could not download {z.as_uri()}" in msg and "does not match" in msg
    assert str(out) in msg
    assert not (tmp_path / "root").exists()


def test_unreachable_url_says_which_url_and_where_to_put_the_files(tmp_path):
    arch = Archive((tmp_path / "missing.zip").as_uri(), None, None, ("ratings.csv", "movies.csv"))
    out = tmp_path / "movielens-latest-small"
    with pytest.raises(RecError) as e:
        download_movielens("ml-latest-small", out, archive=arch)
    msg = one_line(e)
    assert msg.startswith(f"could not download {arch.url}")
    assert f"unzip ratings.csv, movies.csv into {out}" in msg and not out.exists()


# ---- through scripts/prepare_data.py (exit 2, one stderr line, no traceback, no run_dir) -------

def run_prepare(tmp_path, *args, env=None):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "scripts/prepare_data.py", "--run_dir", str(run_dir), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return proc, run_dir


def assert_clean_failure(proc, run_dir, *fragments):
    line = user_error_line(proc)
    for f in fragments:
        assert f in line
    assert not run_dir.exists()


@pytest.mark.slow
def test_script_missing_files(tmp_path):
    proc, run_dir = run_prepare(tmp_path, "--gin_file", "configs/ml-latest-small/data.gin",
                                env={"SEMID_DATA_ROOT": str(tmp_path / "empty")})
    assert_clean_failure(proc, run_dir, "not found in", "movielens-latest-small", "--download")


@pytest.mark.slow
def test_script_unknown_dataset(tmp_path):
    proc, run_dir = run_prepare(tmp_path, "--gin_param", "load_split.name = 'beauty'")
    assert_clean_failure(proc, run_dir, "unknown dataset 'beauty'")


@pytest.mark.slow
def test_script_gin_typo(tmp_path):
    proc, run_dir = run_prepare(tmp_path, "--gin_param", "load_split.nmae = 'x'")
    assert_clean_failure(proc, run_dir, "load_split", "nmae")


@pytest.mark.slow
def test_script_bad_file_content(tmp_path):
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n1,1,4.0,1\nbob,2,4.0,2\n")
    proc, run_dir = run_prepare(tmp_path, "--gin_file", "configs/ml-latest-small/data.gin",
                                env={"SEMID_DATA_ROOT": str(d.parent)})
    assert_clean_failure(proc, run_dir, "ratings.csv", "non-numeric value 'bob'")


@pytest.mark.slow
def test_script_success_writes_results_and_config(tmp_path):
    rows = "".join(f"{u},{m},4.0,{u * 10 + m}\n" for u in (1, 2, 3) for m in (1, 2, 3))
    d = ml_folder(tmp_path, "userId,movieId,rating,timestamp\n" + rows + "4,1,5.0,1\n")
    proc, run_dir = run_prepare(tmp_path, "--gin_file", "configs/ml-latest-small/data.gin",
                                "--gin_param", "load_split.k_core = 0",
                                env={"SEMID_DATA_ROOT": str(d.parent)})
    assert proc.returncode == 0, proc.stderr
    assert "| users | 4 | 3 |" in proc.stdout and "| interactions | 10 | 9 |" in proc.stdout
    res = json.loads((run_dir / "results.json").read_text())
    assert res["dataset"]["raw_counts"]["users"] == 4 and res["dataset"]["counts"]["users"] == 3
    assert "load_split.k_core = 0" in (run_dir / "config.gin").read_text()
