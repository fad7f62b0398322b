"""Dataset sources: the real shared copies load with their published counts; the formats parse."""
import gzip
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import gin
import numpy as np
import pytest

from retrieval.data import load_split
from retrieval.data.download import Archive, download_movielens
from retrieval.data.sources_amazon import AmazonSource, AmazonBeautySource
from retrieval.data.sources_movielens import (MovieLens1MSource, MovieLens25MSource,
                                              MovieLens100KSource, MovieLensLatestSmallSource)
from retrieval.data.sources_text import TextSource
from retrieval.data.stats import interaction_stats
from retrieval.data.synthetic_csv import write_movielens_csv


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def rows_are_time_ordered(inter) -> bool:
    u, t = inter.user, inter.timestamp
    return bool(np.all(u[1:] >= u[:-1]) and np.all((u[1:] != u[:-1]) | (t[1:] >= t[:-1])))


# ---- real data (../shared/data or $SEMID_DATA_ROOT) -------------------------------------------

def test_beauty_split_has_the_tiger_benchmark_counts(data_root):
    split = load_split("amazon-beauty")
    s = split.stats()
    assert (s["users"], s["items"], s["interactions"]) == (22_363, 12_101, 198_502)
    assert s["train_interactions"] == 198_502 - 2 * 22_363
    assert split.has_time is False


def test_beauty_first_user_is_split_in_file_order(data_root):
    # Beauty.txt line 1 is "1 1 2 3 4 5": train 1,2,3; valid 4; test 5; times are positions.
    split = load_split("amazon-beauty")
    assert split.user_raw_ids[0] == "1"
    off = split.train_offsets
    assert split.catalogue.raw_ids[split.train_items[off[0]:off[1]]].tolist() == ["1", "2", "3"]
    assert split.catalogue.raw_ids[[split.valid_item[0], split.test_item[0]]].tolist() == ["4", "5"]
    assert split.train_times[off[0]:off[1]].tolist() == [0, 1, 2]
    assert (split.valid_time[0], split.test_time[0]) == (3, 4)


def test_beauty_item_text_follows_the_amazon_template(data_root):
    cat = AmazonBeautySource().load().catalogue
    assert cat.text(1) == ("OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce; brand: OPI; "
                           "categories: Makeup, Nails, Nail Polish")
    # No brand: the first attribute is a top-level category, not a brand.
    assert cat.text(4) == ("WAWO 15 Color Professionl Makeup Eyeshadow Camouflage Facial Concealer "
                           "Neutral Palette; categories: Makeup, Face, Concealers & Neutralizers")
    # Amazon's placeholder brand "Unknown" is dropped.
    assert cat.text(3) == ("SKIN79 The Prestige Beblesh Balm BB Cream Diamond Collection; "
                           "categories: Skin Care, Face, Creams & Moisturizers")
    brands = set(cat.fields["brand"])
    assert "L'Oreal Paris" in brands and "L&#39;Oreal Paris" not in brands   # HTML decoded
    assert np.count_nonzero(cat.fields["brand"][1:]) == 7_456
    assert "Skin Care" not in brands and "Makeup" not in brands


def test_ml_latest_small_raw_counts(data_root):
    inter = MovieLensLatestSmallSource().load()
    s = interaction_stats(inter)
    assert (s["users"], s["items"], s["interactions"]) == (610, 9_724, 100_836)
    assert s["catalogue_items"] == 9_742                 # movies.csv also lists unrated movies
    assert inter.has_time and rows_are_time_ordered(inter)


def test_ml_latest_small_item_text_has_genres_and_top_tags(data_root):
    cat = MovieLensLatestSmallSource().load().catalogue
    # tags.csv has movie 1 tagged "pixar" twice and "fun" once.
    assert cat.text(1) == ("Toy Story (1995); genres: Adventure, Animation, Children, Comedy, "
                           "Fantasy; tags: pixar, fun")
    no_tags = MovieLensLatestSmallSource(num_tags=0).load().catalogue
    assert no_tags.text(1) == "Toy Story (1995); genres: Adventure, Animation, Children, Comedy, Fantasy"


def test_ml_100k_raw_counts_and_genres(data_root):
    inter = MovieLens100KSource().load()
    s = interaction_stats(inter)
    assert (s["users"], s["items"], s["interactions"]) == (943, 1_682, 100_000)
    assert rows_are_time_ordered(inter)
    assert inter.catalogue.text(1) == "Toy Story (1995); genres: Animation, Children's, Comedy"


def test_ml_1m_partial_ratings_file_and_latin1_titles(data_root):
    src = MovieLens1MSource(ratings_file="ratings_users0001-2999.dat.gz")
    s = interaction_stats(src.load())
    assert (s["users"], s["items"], s["interactions"]) == (2_999, 3_615, 487_650)
    cat = src.load().catalogue
    row = int(np.flatnonzero(cat.raw_ids == "73")[0])
    assert cat.titles[row] == "Misérables, Les (1995)"


def test_ml_25m_shared_copy_lacks_ratings_and_says_so(data_root):
    from retrieval.core.errors import RecError
    with pytest.raises(RecError, match=r"ratings\.csv not found .*--download"):
        MovieLens25MSource().load()


def test_cached_split_equals_fresh_split(data_root):
    fresh = load_split("ml-100k", use_cache=True)        # builds and writes the cache
    cached = load_split("ml-100k", use_cache=True)
    for f in ("train_offsets", "train_items", "train_times", "valid_item", "test_item", "test_time"):
        np.testing.assert_array_equal(getattr(fresh, f), getattr(cached, f))
    assert cached.catalogue.texts()[:5] == fresh.catalogue.texts()[:5]


# ---- formats, on tiny files ---------------------------------------------------------------------

def write_ml_csv(folder, ratings: str, movies: str = "movieId,title,genres\n1,A (1990),Drama\n"
                 "2,B (1991),Comedy|Drama\n3,\"C, The (1992)\",(no genres listed)\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings)
    (folder / "movies.csv").write_text(movies)
    return folder


def test_ml_csv_remaps_ids_and_appends_unknown_movies(tmp_path):
    d = write_ml_csv(tmp_path / "ml", "userId,movieId,rating,timestamp\n"
                     "7,3,4.0,30\n7,1,3.0,10\n2,99,5.0,5\n2,2,1.0,6\n")
    inter = MovieLens25MSource(path=str(d)).load()
    assert inter.user_raw_ids.tolist() == ["2", "7"]                  # raw-id order
    assert inter.user.tolist() == [0, 0, 1, 1]
    # Catalogue order = movies.csv order; movie 99 is not in movies.csv: appended as item 4.
    assert inter.catalogue.raw_ids.tolist() == ["", "1", "2", "3", "99"]
    assert inter.item.tolist() == [4, 2, 1, 3]                         # user 2: t=5, 6; user 7: t=10, 30
    assert inter.timestamp.tolist() == [5, 6, 10, 30]
    assert inter.catalogue.text(3) == "C, The (1992)" and inter.catalogue.text(4) == ""


def test_rating_threshold_keeps_ratings_at_or_above_it(tmp_path):
    d = write_ml_csv(tmp_path / "ml", "userId,movieId,rating,timestamp\n"
                     "1,1,4.0,1\n1,2,3.5,2\n1,3,5.0,3\n2,1,0.5,1\n")
    assert MovieLens25MSource(path=str(d)).load().num_events == 4     # every rating counts
    kept = MovieLens25MSource(path=str(d), rating_threshold=4.0).load()
    assert kept.item.tolist() == [1, 3] and kept.user_raw_ids.tolist() == ["1"]


def test_ml_1m_reads_plain_and_gzipped_ratings(tmp_path):
    ratings = "1::2::5::20\n1::1::3::10\n2::1::4::5\n"
    movies = "1::Amélie (2001)::Comedy|Romance\n2::B::Drama\n"
    for name, data in (("ratings.dat", ratings.encode()),
                       ("ratings.dat.gz", gzip.compress(ratings.encode()))):
        d = tmp_path / name
        d.mkdir()
        (d / name).write_bytes(data)
        (d / "movies.dat").write_bytes(movies.encode("latin-1"))
        inter = MovieLens1MSource(path=str(d)).load()
        assert inter.item.tolist() == [1, 2, 1] and inter.timestamp.tolist() == [10, 20, 5]
        assert inter.catalogue.text(1) == "Amélie (2001); genres: Comedy, Romance"


def test_text_source_with_and_without_timestamps(tmp_path):
    p = tmp_path / "seq.txt"
    p.write_text("1 10 100\n1 20 50\n2 10 7\n")
    with_t = TextSource(path=str(p)).load()
    assert with_t.has_time and with_t.item.tolist() == [2, 1, 1] and with_t.timestamp.tolist() == [50, 100, 7]
    p.write_text("1 10\n1 20\n2 10\n1 30\n")
    no_t = TextSource(path=str(p)).load()
    assert not no_t.has_time
    assert no_t.catalogue.raw_ids[no_t.item].tolist() == ["10", "20", "30", "10"]
    assert no_t.timestamp.tolist() == [0, 1, 2, 0]                     # position in the user's history


def test_amazon_source_splits_brand_from_categories(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("1 1 2 3\n2 3 2 4\n")
    items = tmp_path / "items.csv"
    # A first attribute is a top-level category (not a brand) when some item lists it second,
    # right after its brand — "Hair Care" here, through item 4.
    items.write_text("item_id,asin,title,attributes\n"
                     "1,A1,Lipstick,Acme|Makeup|Lips|Makeup\n"      # brand, repeated category
                     "2,A2,Shampoo,Hair Care|Shampoos\n"             # no brand
                     "3,A3,Cream,Unknown|Skin Care|Face\n"           # placeholder brand
                     "4,A4,Conditioner,Silky|Hair Care|Conditioners\n")
    cat = AmazonSource(sequences_path=str(seq), items_path=str(items)).load().catalogue
    assert cat.texts() == ["Lipstick; brand: Acme; categories: Makeup, Lips",
                           "Shampoo; categories: Hair Care, Shampoos",
                           "Cream; categories: Skin Care, Face",
                           "Conditioner; brand: Silky; categories: Hair Care, Conditioners"]


def test_synthetic_csv_round_trips_through_the_ml25m_loader(tmp_path):
    counts = write_movielens_csv(tmp_path / "syn", num_ratings=5_000, num_users=200, num_items=300)
    assert counts["ratings"] == 5_000
    header = (tmp_path / "syn" / "ratings.csv").read_text().splitlines()[:2]
    assert header[0] == "userId,movieId,rating,timestamp" and header[1].count(",") == 3
    inter = MovieLens25MSource(path=str(tmp_path / "syn")).load()
    s = interaction_stats(inter)
    assert s["interactions"] == 5_000 and s["users"] == counts["users"]
    assert inter.catalogue.num_items == 300 and rows_are_time_ordered(inter)


def test_input_fingerprint_hashes_bytes_and_options_without_parsing(tmp_path):
    d = write_ml_csv(tmp_path / "ml", "not,a,ratings,file\n")           # would not parse
    a = MovieLens25MSource(path=str(d)).input_fingerprint()
    assert a == MovieLens25MSource(path=str(d)).input_fingerprint()
    assert a != MovieLens25MSource(path=str(d), rating_threshold=4.0).input_fingerprint()
    (d / "ratings.csv").write_text("not,a,ratings,file!\n")
    assert a != MovieLens25MSource(path=str(d)).input_fingerprint()


def test_gin_selects_dataset_and_source_path(tmp_path, clean_gin):
    d = write_ml_csv(tmp_path / "ml", "userId,movieId,rating,timestamp\n"
                     + "".join(f"{u},{m},4.0,{u * 10 + m}\n" for u in (1, 2) for m in (1, 2, 3)))
    gin.parse_config(["load_split.name = 'ml-latest-small'", "load_split.k_core = 0",
                      f"MovieLensLatestSmallSource.path = '{d}'"])
    split = load_split()
    assert split.name == "ml-latest-small" and split.stats()["interactions"] == 6


# ---- download helper, offline (file:// URLs) ----------------------------------------------------

def make_zip(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_download_checks_md5_and_extracts_below_the_top_folder(tmp_path):
    data = make_zip({"ml-100k/u.data": "1\t1\t5\t10\n", "ml-100k/u.item": "x",
                     "ml-100k/README": "hi"})
    z = tmp_path / "ml-100k.zip"
    z.write_bytes(data)
    arch = Archive(z.as_uri(), hashlib.md5(data).hexdigest(), len(data), ("u.data", "u.item"))
    out = tmp_path / "data" / "movielens-100k"
    written = download_movielens("ml-100k", out, archive=arch)
    assert sorted(p.name for p in written) == ["README", "u.data", "u.item"]
    assert (out / "u.data").read_text() == "1\t1\t5\t10\n"
    assert not (out / "ml-100k.zip").exists()                          # the zip is removed
    assert download_movielens("ml-100k", out, archive=arch) == []       # present: no download


# ---- the stats table of scripts/prepare_data.py agrees with the pinned counts ------------------

@pytest.mark.slow
@pytest.mark.parametrize("dataset, rows", [
    ("ml-latest-small", ["| users | 610 | 610 |", "| items | 9,724 | 3,650 |",
                         "| interactions | 100,836 | 90,274 |"]),
    ("amazon-beauty", ["| users | 22,363 | 22,363 |", "| items | 12,101 | 12,101 |",
                       "| interactions | 198,502 | 198,502 |", "| train interactions | - | 153,776 |"]),
])
def test_prepare_data_prints_raw_and_split_counts(data_root, tmp_path, dataset, rows):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "scripts/prepare_data.py", "--gin_file",
                           f"configs/{dataset}/data.gin", "--run_dir", str(tmp_path / "run")],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for r in rows:
        assert r in proc.stdout
    res = json.loads((tmp_path / "run" / "results.json").read_text())["dataset"]
    assert res["name"] == dataset and len(res["fingerprint"]) == 16


def test_synthetic_users_consume_an_item_once_unless_asked_to_repeat():
    """With repeats, a test target could be a history item, which the protocol (history excluded,
    target kept) lets a scorer rank but a history-excluding generator never return."""
    from retrieval.data import synthetic
    d = synthetic.generate(num_users=60, num_items=40, mean_length=15.0, seed=0)
    pairs = d["user"].astype(np.int64) * 100 + d["item"]
    assert len(np.unique(pairs)) == len(pairs)
    assert (np.diff(d["user"]) >= 0).all()                                   # still grouped by user
    raw = synthetic.generate(num_users=60, num_items=40, mean_length=15.0, seed=0, unique_per_user=False)
    raw_pairs = raw["user"].astype(np.int64) * 100 + raw["item"]
    assert len(np.unique(raw_pairs)) < len(raw_pairs)                         # the generator repeats
    assert set(pairs.tolist()) == set(raw_pairs.tolist())                     # first visits are kept
