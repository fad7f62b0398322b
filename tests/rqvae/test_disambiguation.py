"""Disambiguation codes, collision and codebook statistics, and the artifact's ID <-> item maps."""
import numpy as np
import pytest

from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds
from rqvae.disambiguation import collision_stats, disambiguate, level_stats, prefix_sharing


def test_disambiguation_counts_items_within_each_group_of_equal_codes():
    codes = np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [0, 0, 1], [0, 0, 0]])
    full = disambiguate(codes)
    assert full[:, :3].tolist() == codes.tolist()
    assert full[:, 3].tolist() == [0, 1, 0, 2, 0, 1]
    assert len(np.unique(full, axis=0)) == len(full)


def test_disambiguation_of_unique_codes_is_all_zero():
    codes = np.array([[0, 1], [1, 0], [1, 1]])
    assert disambiguate(codes)[:, 2].tolist() == [0, 0, 0]


def test_disambiguation_scales_to_many_items_without_pairwise_work():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(200_000, 3))            # 64 groups of ~3,125 items
    full = disambiguate(codes)
    assert len(np.unique(full, axis=0)) == 200_000
    _, counts = np.unique(codes, axis=0, return_counts=True)
    assert full[:, 3].max() == counts.max() - 1


def test_collision_stats_by_hand():
    codes = np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [0, 0, 1], [0, 0, 0]])
    s = collision_stats(codes)
    assert s == {"collision_fraction": 3 / 6, "largest_group": 3, "distinct_ids": 3}


def test_level_usage_and_perplexity_by_hand():
    codes = np.array([[0, 3], [0, 3], [1, 3], [1, 3]])
    lv = level_stats(codes, codebook_size=4)
    assert lv[0]["usage"] == 0.5 and lv[0]["perplexity"] == pytest.approx(2.0)
    assert lv[1]["usage"] == 0.25 and lv[1]["perplexity"] == pytest.approx(1.0)


def test_prefix_sharing_counts_shared_leading_codes():
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    share = prefix_sharing(codes, np.array([0, 0, 0]), np.array([1, 2, 3]))
    assert share.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])


def _artifact(codes_l: np.ndarray) -> SemanticIds:
    full = disambiguate(codes_l)
    padded = np.concatenate([np.full((1, full.shape[1]), -1), full])
    return SemanticIds(codes=padded, codebook_size=4, dataset_fingerprint="abc")


def test_artifact_maps_items_to_ids_and_back(tmp_path):
    sids = _artifact(np.array([[3, 1], [0, 2], [3, 1], [1, 1]]))
    assert sids.ids_of(np.array([1, 3])).tolist() == [[3, 1, 0], [3, 1, 1]]
    assert sids.items_by_id().tolist() == [2, 4, 1, 3]        # IDs in lexicographic order
    sids.save(tmp_path)
    back = SemanticIds.load(tmp_path)
    assert np.array_equal(back.codes, sids.codes) and back.codes[0].tolist() == [-1, -1, -1]
    queries = np.array([[3, 1, 1], [0, 2, 0], [0, 2, 1], [3, 3, 0], [-1, 0, 0]])
    assert back.items_of(queries).tolist() == [3, 2, 0, 0, 0]
    all_items = np.arange(1, 5)
    assert back.items_of(back.ids_of(all_items)).tolist() == all_items.tolist()


def test_artifact_from_another_dataset_is_refused(tmp_path):
    _artifact(np.array([[0, 1], [1, 0]])).save(tmp_path)
    sids = SemanticIds.load(tmp_path)
    sids.check_dataset("abc")                                  # same split: accepted
    with pytest.raises(RecError, match="another dataset or split") as e:
        sids.check_dataset("def")
    assert "\n" not in str(e.value)
