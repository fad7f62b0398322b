"""Token layout, ID lookup and the prefix trie of the generator (docs/protocol.md §6)."""
import numpy as np
import pytest
import torch

from onerec.prefix_trie import PrefixTrie
from onerec.vocab import BOS, EOS, PAD, ItemDecoder, SidVocab
from retrieval.core.errors import RecError

from onerec_helpers import random_sids, sids_from_prefixes

# 5 items, L = 2 levels of K = 4 codes; items 2 and 3 share (1, 2) and differ only in d.
PREFIXES = np.array([[0, 3], [1, 2], [1, 2], [1, 0], [3, 3]])


def test_token_layout_by_hand():
    sids = sids_from_prefixes(PREFIXES, codebook_size=4)
    v = SidVocab.from_semantic_ids(sids, num_user_tokens=10)
    assert (PAD, BOS, EOS) == (0, 1, 2)
    assert v.num_disambiguation == 2
    assert v.offsets.tolist() == [3, 7, 11]          # level 0: 3..6, level 1: 7..10, d: 11..12
    assert v.widths.tolist() == [4, 4, 2]
    assert v.user_offset == 13 and v.size == 23
    tok = v.item_tokens(sids)
    assert tok[0].tolist() == [PAD, PAD, PAD]
    assert tok[1].tolist() == [3, 10, 11]            # (0, 3, d=0)
    assert tok[2].tolist() == [4, 9, 11]             # (1, 2, d=0)
    assert tok[3].tolist() == [4, 9, 12]             # (1, 2, d=1)


def test_user_tokens_are_in_the_user_range_and_deterministic():
    v = SidVocab(levels=3, codebook_size=256, num_disambiguation=4, num_user_tokens=2000)
    users = np.arange(50_000)
    t = v.user_tokens(users)
    assert t.min() >= v.user_offset and t.max() < v.size
    assert np.array_equal(t, v.user_tokens(users))
    assert len(np.unique(t)) == 2000                  # the hash spreads over every bucket


def test_decode_needs_the_full_id_including_d():
    sids = sids_from_prefixes(PREFIXES, codebook_size=4)
    v = SidVocab.from_semantic_ids(sids)
    dec = ItemDecoder(v, sids.codes)
    tok = v.item_tokens(sids)
    assert dec.decode(tok[1:]).tolist() == [1, 2, 3, 4, 5]
    assert dec.decode(np.array([4, 9, 12])) == 3
    assert dec.decode(np.array([4, 9, 11])) == 2
    assert dec.decode(np.array([[3, 9, 11], [4, 9, 3]])).tolist() == [0, 0]   # no such ID; d token out of range


def test_duplicate_full_ids_are_refused():
    sids = sids_from_prefixes(PREFIXES, codebook_size=4)
    sids.codes[3] = sids.codes[2]                      # two items with one full ID
    with pytest.raises(RecError, match="not unique per item"):
        PrefixTrie(SidVocab.from_semantic_ids(sids), sids.codes)


def test_codes_outside_the_codebook_are_refused():
    sids = sids_from_prefixes(PREFIXES, codebook_size=4)
    sids.codes[1, 0] = 4
    with pytest.raises(RecError, match="outside the codebook"):
        SidVocab(2, 4, 2).item_tokens(sids)


def test_trie_allowed_tokens_by_hand():
    sids = sids_from_prefixes(PREFIXES, codebook_size=4)
    trie = PrefixTrie(SidVocab.from_semantic_ids(sids), sids.codes)
    assert trie.allowed_tokens([]) == [3, 4, 6]             # first codes 0, 1, 3
    assert trie.allowed_tokens([4]) == [7, 9]               # under 1: second codes 0, 2
    assert trie.allowed_tokens([4, 9]) == [11, 12]          # (1, 2): d = 0, 1
    assert trie.allowed_tokens([4, 7]) == [11]              # (1, 0): d = 0 only
    assert trie.allowed_tokens([5]) == []                   # token 5 = code 2: no item starts so
    assert trie.allowed_tokens([4, 9, 12]) == []            # complete
    assert trie.num_nodes == [1, 3, 4]


def test_trie_walk_maps_every_path_to_its_item_and_nothing_else():
    sids = random_sids(500, levels=3, codebook_size=8, seed=3)
    v = SidVocab.from_semantic_ids(sids)
    trie = PrefixTrie(v, sids.codes)
    tok = torch.from_numpy(v.item_tokens(sids))
    assert torch.equal(trie.walk(tok[1:]), torch.arange(1, 501))
    rng = np.random.default_rng(0)
    rand = torch.from_numpy(rng.integers(0, v.size, size=(2000, 4)))
    expect = ItemDecoder(v, sids.codes).decode(rand.numpy())
    assert torch.equal(trie.walk(rand), torch.from_numpy(expect))


def test_trie_tables_count_the_completions():
    """The number of valid entries at the last step equals the number of items."""
    sids = random_sids(300, levels=2, codebook_size=5, seed=1)
    trie = PrefixTrie(SidVocab.from_semantic_ids(sids), sids.codes)
    assert int((trie.step_children(2) >= 0).sum()) == 300
    assert sorted(trie.step_children(2)[trie.step_children(2) >= 0].tolist()) == list(range(1, 301))
