"""ItemIndex: the faiss wrapper returns the same neighbours as brute-force numpy, honours exclusions,
never returns the padding item, and refreshes."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.core.errors import RecError
from retrieval.negatives.item_index import ItemIndex, exclusion_mask


def brute_force(queries, table, k, exclude=None, cosine=False):
    """Top-k item ids (1-based) by inner product over rows 1.. of `table`, numpy only."""
    items = table[1:].astype(np.float64)
    q = queries.astype(np.float64)
    if cosine:
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ items.T                                                 # (Q, N)
    if exclude is not None:
        for r, row in enumerate(exclude):                                # reference: plain loop
            for item in row:
                if item > 0:
                    scores[r, item - 1] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k] + 1


def random_table(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n + 1, d)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 300), d=st.integers(1, 16), q=st.integers(1, 20), k=st.integers(1, 5),
       seed=st.integers(0, 10_000))
def test_flat_search_equals_brute_force(n, d, q, k, seed):
    table = random_table(n, d, seed)
    queries = np.random.default_rng(seed + 1).normal(size=(q, d)).astype(np.float32)
    res = ItemIndex(table).search(queries, k)
    np.testing.assert_array_equal(res.ids, brute_force(queries, table, min(k, n)))
    expected = np.take_along_axis(queries @ table[1:].T, res.ids - 1, axis=1)
    np.testing.assert_allclose(res.scores, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 200), m=st.integers(1, 15), k=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_search_with_exclusion_matrix_equals_brute_force(n, m, k, seed):
    rng = np.random.default_rng(seed)
    table = random_table(n, 8, seed)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    exclude = rng.integers(0, n + 1, size=(6, m))                         # 0 = padding, repeats allowed
    res = ItemIndex(table).search(queries, k, exclude=exclude)
    np.testing.assert_array_equal(res.ids, brute_force(queries, table, k, exclude))
    assert not exclusion_mask(res.ids, exclude).any()


def test_callable_exclusion_searches_again_until_k_items_survive():
    # Each row excludes its 40 nearest items; the first fetch (k + k = 6) finds none, so the
    # doubling rounds must run, and the result must equal brute force.
    table = random_table(200, 8, 3)
    queries = np.random.default_rng(4).normal(size=(5, 8)).astype(np.float32)
    banned = brute_force(queries, table, 40)
    res = ItemIndex(table).search(queries, 3, exclude=lambda rows, ids: exclusion_mask(ids, banned[rows]))
    np.testing.assert_array_equal(res.ids, brute_force(queries, table, 3, banned))


@pytest.mark.parametrize("bound", [0, 10, 40, 41])
def test_callable_exclusion_with_a_bound_equals_brute_force_whether_the_bound_holds_or_not(bound):
    # The bound sizes the first fetch only: too small (0, 10) costs extra rounds, never results.
    table = random_table(200, 8, 5)
    queries = np.random.default_rng(6).normal(size=(5, 8)).astype(np.float32)
    banned = brute_force(queries, table, 40)
    res = ItemIndex(table).search(queries, 4, exclude=lambda rows, ids: exclusion_mask(ids, banned[rows]),
                                  max_excluded=bound)
    np.testing.assert_array_equal(res.ids, brute_force(queries, table, 4, banned))


def test_padding_row_is_never_returned():
    table = random_table(10, 4, 0)
    table[0] = 100.0                                                     # the best match by far
    res = ItemIndex(table).search(np.ones((3, 4), np.float32), 10)
    assert (res.ids > 0).all() and sorted(res.ids[0]) == list(range(1, 11))


def test_too_few_items_after_exclusion_pads_with_zero_and_minus_inf():
    table = random_table(4, 3, 1)
    res = ItemIndex(table).search(np.ones((1, 3), np.float32), 3, exclude=np.array([[1, 2]]))
    assert sorted(res.ids[0, :2]) == [3, 4] and res.ids[0, 2] == 0 and res.scores[0, 2] == -np.inf


def test_cosine_metric_equals_brute_force_cosine():
    table = random_table(100, 6, 5) * np.random.default_rng(6).uniform(0.1, 10, size=(101, 1))
    queries = np.random.default_rng(7).normal(size=(8, 6)).astype(np.float32)
    res = ItemIndex(table.astype(np.float32), metric="cosine").search(queries, 5)
    np.testing.assert_array_equal(res.ids, brute_force(queries, table, 5, cosine=True))


def test_item_rows_layout_and_torch_input_give_the_same_index():
    table = random_table(50, 8, 8)
    queries = np.random.default_rng(9).normal(size=(4, 8)).astype(np.float32)
    a = ItemIndex(table).search(queries, 5).ids
    b = ItemIndex(table[1:], num_items=50).search(queries, 5).ids      # (N, d) content layout
    c = ItemIndex(torch.tensor(table, requires_grad=True)).search(torch.tensor(queries), 5).ids
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_refresh_uses_the_new_embeddings():
    table = random_table(60, 8, 10)
    queries = np.random.default_rng(11).normal(size=(4, 8)).astype(np.float32)
    index = ItemIndex(table)
    new = random_table(60, 8, 12)
    index.refresh(new)
    np.testing.assert_array_equal(index.search(queries, 5).ids, brute_force(queries, new, 5))


def test_neighbour_table_never_holds_the_item_itself_even_with_duplicates():
    table = random_table(80, 8, 13)
    table[5] = table[6]                                                  # two identical items
    nb = ItemIndex(table, metric="cosine").neighbour_table(4)
    assert nb.shape == (81, 4) and (nb[0] == 0).all()
    assert not (nb[1:] == np.arange(1, 81)[:, None]).any()
    assert nb[5, 0] == 6 and nb[6, 0] == 5                             # cosine 1: the twin first
    ids = np.arange(1, 81)
    # Same neighbour sets as brute force (the twins tie, so their order may differ).
    expected = brute_force(table[1:], table, 4, exclude=ids[:, None], cosine=True)
    np.testing.assert_array_equal(np.sort(nb[1:], axis=1), np.sort(expected, axis=1))


def test_ivf_with_all_lists_probed_is_exact_and_hnsw_recall_is_high():
    table = random_table(2000, 16, 14)
    queries = np.random.default_rng(15).normal(size=(50, 16)).astype(np.float32)
    exact = brute_force(queries, table, 10)
    ivf = ItemIndex(table, kind="ivf", nlist=16, nprobe=16).search(queries, 10).ids
    np.testing.assert_array_equal(ivf, exact)
    hnsw = ItemIndex(table, kind="hnsw").search(queries, 10).ids
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw, exact)])
    assert recall >= 0.95


def test_bad_settings_raise_recerror():
    with pytest.raises(RecError, match="kind"):
        ItemIndex(random_table(5, 2, 0), kind="lsh")
    with pytest.raises(RecError, match="rows"):
        ItemIndex(random_table(5, 2, 0), num_items=9)
    with pytest.raises(RecError, match="queries"):
        ItemIndex(random_table(5, 2, 0)).search(np.ones((2, 3), np.float32), 1)
