"""Item embeddings: the offline text encoder, its cache, and the non-text sources."""
import numpy as np
import pytest

from retrieval.data.types import ItemCatalogue, SplitData
from retrieval.core.errors import RecError
from rqvae import embeddings as E
from rqvae import item_features as F


def _split(sequences: list[list[int]], titles: list[str], genres: list[str] | None = None) -> SplitData:
    """A hand-made split: each sequence is a user's training items (valid/test = last two)."""
    n = len(titles)
    train = [s[:-2] for s in sequences]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in train])]).astype(np.int64)
    items = np.concatenate(train).astype(np.int64)
    obj = lambda xs: np.array([""] + list(xs), dtype=object)  # noqa: E731
    fields = {"genres": obj(genres)} if genres is not None else {}
    cat = ItemCatalogue(obj(str(i) for i in range(1, n + 1)), obj(titles), fields, "movielens")
    u = len(sequences)
    return SplitData(name="hand", train_offsets=offsets, train_items=items,
                     train_times=np.arange(len(items), dtype=np.int64),
                     valid_item=np.array([s[-2] for s in sequences]), valid_time=np.zeros(u, np.int64),
                     test_item=np.array([s[-1] for s in sequences]), test_time=np.zeros(u, np.int64),
                     user_raw_ids=np.array([str(i) for i in range(u)], dtype=object), catalogue=cat,
                     has_time=False, fingerprint="hand")


def _cos(x):
    return x @ x.T


def test_text_encoder_gives_unit_vectors_that_put_similar_texts_close():
    texts = ["red matte lipstick", "matte red lipstick for lips", "anti-dandruff hair shampoo"]
    x = E.TextEncoder(show_progress=False).encode(texts)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    c = _cos(x)
    assert c[0, 1] > c[0, 2] + 0.3
    # batching and length-sorting do not change an item's vector
    y = E.TextEncoder(batch_size=1, show_progress=False).encode(texts[::-1])
    np.testing.assert_allclose(y[::-1], x, atol=1e-5)


def test_text_embeddings_are_cached_by_model_and_texts(monkeypatch):
    split = _split([[1, 2, 3, 4]] * 3, ["alpha cream", "beta shampoo", "gamma soap", "delta gel"])
    first = E.item_embeddings(split)
    monkeypatch.setattr(E.TextEncoder, "encode", lambda self, t: pytest.fail("cache was not used"))
    again = E.item_embeddings(split)
    assert np.array_equal(first.vectors, again.vectors) and first.fingerprint == again.fingerprint
    other = _split([[1, 2, 3, 4]] * 3, ["alpha cream", "beta shampoo", "gamma soap", "epsilon oil"])
    with pytest.raises(pytest.fail.Exception, match="cache was not used"):
        E.item_embeddings(other)                          # other texts: another cache key


def test_missing_model_directory_is_a_one_line_error(tmp_path):
    split = _split([[1, 2, 3]], ["a", "b", "c"])
    with pytest.raises(RecError, match="embedding model directory .*nope not found; set TextEncoder.model_dir") as e:
        E.text_embeddings(split, E.TextEncoder(model_dir=str(tmp_path / "nope")))
    assert "\n" not in str(e.value)
    with pytest.raises(RecError, match="has no config.json"):
        E.TextEncoder(model_dir=str(tmp_path)).encode(["a"])


def test_items_without_text_take_their_cooccurring_items_vectors():
    # item 3 has no text; it co-occurs (window 1) with items 2 and 4 only
    split = _split([[1, 2, 3, 4, 9, 9], [2, 3, 4, 9, 9]], ["a", "b", "", "d", "e", "f", "g", "h", "i"])
    x = np.eye(9, dtype=np.float32)
    missing = np.array([False, False, True] + [False] * 6)
    filled = F.fill_from_neighbours(x, missing, split, window=1)
    # co-occurrence counts of item 3: item 2 twice, item 4 twice -> equal weights
    np.testing.assert_allclose(filled[2], np.array([0, 1, 0, 1, 0, 0, 0, 0, 0]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_array_equal(filled[~missing], x[~missing])


def test_cooccurrence_counts_within_window_and_user():
    split = _split([[1, 2, 3, 9, 9], [3, 1, 9, 9]], ["t"] * 9)
    c = F.cooccurrence_matrix(split, window=1).toarray()
    assert c[0, 1] == 1 and c[1, 2] == 1 and c[0, 2] == 1    # (1,2), (2,3) from user 0, (3,1) user 1
    assert c[0, 0] == 0 and c.sum() == 6 and np.array_equal(c, c.T)


def test_collaborative_embeddings_separate_items_never_seen_together():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 11, size=12)) + [1, 2] for _ in range(30)]      # group A: 1..10
    seqs += [list(rng.integers(11, 21, size=12)) + [11, 12] for _ in range(30)]  # group B: 11..20
    split = _split(seqs, [f"i{i}" for i in range(1, 21)])
    x = E.item_embeddings(split, source="collaborative", dim=4, window=2)
    assert x.vectors.shape == (20, 4)
    c = _cos(x.vectors)
    a, b = np.arange(10), np.arange(10, 20)
    assert c[np.ix_(a, a)].mean() > c[np.ix_(a, b)].mean() + 0.5
    again = E.item_embeddings(split, source="collaborative", dim=4, window=2)
    assert np.array_equal(x.vectors, again.vectors)


def test_attribute_embeddings_match_items_with_equal_attributes():
    genres = ["drama", "drama", "comedy|drama", "horror", "horror", "comedy"]
    split = _split([[1, 2, 3, 4, 5, 6]], [f"t{i}" for i in range(6)], genres)
    x = E.item_embeddings(split, source="attributes", dim=3).vectors
    c = _cos(x)
    assert c[0, 1] == pytest.approx(1.0, abs=1e-5) and c[3, 4] == pytest.approx(1.0, abs=1e-5)
    assert c[0, 3] < 0.5


def test_attributes_without_fields_is_an_error():
    split = _split([[1, 2, 3]], ["a", "b", "c"])
    with pytest.raises(RecError, match="no attribute fields"):
        E.item_embeddings(split, source="attributes")


def test_user_npy_file_is_checked(tmp_path):
    split = _split([[1, 2, 3]], ["a", "b", "c"])
    good = np.arange(12, dtype=np.float64).reshape(4, 3)                # (N+1, d): row 0 = padding
    np.save(tmp_path / "good.npy", good)
    x = E.item_embeddings(split, source="npy", npy_path=str(tmp_path / "good.npy"))
    assert x.vectors.dtype == np.float32 and x.vectors.tolist() == good[1:].tolist()
    np.save(tmp_path / "short.npy", np.zeros((2, 3)))
    with pytest.raises(RecError, match=r"shape \(2, 3\).*expected a numeric \(3, d\)"):
        E.item_embeddings(split, source="npy", npy_path=str(tmp_path / "short.npy"))
    bad = np.zeros((3, 3))
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(RecError, match=r"NaN or inf \(first rows \[1\]"):
        E.item_embeddings(split, source="npy", npy_path=str(tmp_path / "nan.npy"))
    with pytest.raises(RecError, match="not found"):
        E.item_embeddings(split, source="npy", npy_path=str(tmp_path / "missing.npy"))


def test_unknown_source_lists_the_choices():
    split = _split([[1, 2, 3]], ["a", "b", "c"])
    with pytest.raises(RecError, match="'bert' is unknown; choose one of: text, attributes, npy, collaborative"):
        E.item_embeddings(split, source="bert")


def test_a_catalogue_without_any_text_points_to_collaborative_embeddings():
    split = _split([[1, 2, 3]], ["", "", ""])
    with pytest.raises(RecError, match="has no item text.*source = 'collaborative'"):
        E.item_embeddings(split)
