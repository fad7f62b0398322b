"""Constrained beam search: equal to `transformers` generate, to brute force, and always valid."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onerec.beam_search import constrained_beam_search
from onerec.cached_decoder import CachedT5Decoder
from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator

from onerec_helpers import assert_same_ranking, random_sids, sequence_logprobs, sids_from_prefixes, tiny_model
from tiny_splits import make_split


def _histories(num_users, max_len, num_items, seed=0):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, num_items + 1, size=(num_users, max_len))
    for u in range(num_users):                                  # left padding, varied lengths
        items[u, : rng.integers(0, max_len)] = 0
    items[:, -1] = rng.integers(1, num_items + 1, size=num_users)
    items = torch.from_numpy(items)
    return HistoryBatch(torch.arange(num_users), items, torch.zeros_like(items))


def _hf_generate(model, batch, beams, exclude_history=False):
    """`transformers` beam search with the trie as prefix_allowed_tokens_fn; pure sum-of-logprob
    ranking (length_penalty = 0, all IDs have the same length)."""
    ids, mask = model.encode_histories(batch)
    L1 = model.vocab.id_length

    def allowed(batch_id, sent):
        toks = model.trie.allowed_tokens(sent[1:].tolist())
        if exclude_history and len(sent) - 1 == L1 - 1:
            hist = set(batch.items[batch_id].tolist())
            toks = [t for t in toks
                    if int(model.trie.walk(torch.tensor(sent[1:].tolist() + [t]))) not in hist]
        return toks

    out = model.t5.generate(input_ids=ids, attention_mask=mask, num_beams=beams,
                            num_return_sequences=beams, max_new_tokens=L1, do_sample=False,
                            prefix_allowed_tokens_fn=allowed, length_penalty=0.0, early_stopping=True,
                            output_scores=True, return_dict_in_generate=True)
    U = ids.shape[0]
    seq = out.sequences.view(U, beams, -1)[:, :, 1:]
    return model.trie.walk(seq), out.sequences_scores.view(U, beams)


def test_cached_decoder_logprobs_equal_teacher_forcing():
    sids = random_sids(200, levels=3, codebook_size=8, seed=1)
    model = tiny_model(sids, seed=1)
    batch = _histories(4, 6, 200)
    ids, mask = model.encode_histories(batch)
    target = torch.from_numpy(model.vocab.item_tokens(sids)[[5, 17, 99, 150]])      # one item per user
    dec = CachedT5Decoder(model.t5, ids, mask, max_steps=4)
    tok, total = dec.start_tokens(), torch.zeros(4)
    with torch.no_grad():
        for t in range(4):
            total += dec.step(tok).gather(1, target[:, t:t + 1])[:, 0]
            tok = target[:, t]
    expect = torch.stack([sequence_logprobs(model, ids[u:u + 1], mask[u:u + 1], target[u:u + 1])[0, 0]
                          for u in range(4)])
    assert torch.allclose(total, expect, atol=1e-4)


@pytest.mark.parametrize("beams", [5, 20])
def test_equals_transformers_generate(beams):
    sids = random_sids(300, levels=3, codebook_size=8, seed=2)
    model = tiny_model(sids, seed=2, beam_width=beams)
    batch = _histories(6, 7, 300, seed=2)
    ours = model.beam_search(batch, beams)
    hf_items, hf_scores = _hf_generate(model, batch, beams)
    assert_same_ranking(ours.items, ours.scores, hf_items, hf_scores)


def test_equals_transformers_generate_with_history_exclusion():
    # every L-prefix holds two items (d = 0, 1) and histories hold only d = 1 items, so no prefix
    # is entirely excluded (transformers refuses a prefix with no allowed token)
    prefixes = np.repeat(np.array([[a, b] for a in range(4) for b in range(4)]), 2, axis=0)
    sids = sids_from_prefixes(prefixes, codebook_size=4)
    model = tiny_model(sids, seed=4, beam_width=10, exclude_history=True)
    rng = np.random.default_rng(4)
    items = torch.from_numpy(2 * rng.integers(1, 17, size=(5, 8)))               # even = d 1
    batch = HistoryBatch(torch.arange(5), items, torch.zeros_like(items))
    ours = model.beam_search(batch, 10)
    hf_items, hf_scores = _hf_generate(model, batch, 10, exclude_history=True)
    assert_same_ranking(ours.items, ours.scores, hf_items, hf_scores)
    for u in range(5):
        assert not set(ours.items[u].tolist()) & set(batch.items[u].tolist())
    plain = tiny_model(sids, seed=4, beam_width=10, exclude_history=False).beam_search(batch, 10)
    assert any(set(plain.items[u].tolist()) & set(batch.items[u].tolist()) for u in range(5))


def test_exhaustive_beam_equals_brute_force_enumeration():
    """With B >= N every item survives, ranked by its exact sequence log-probability."""
    sids = random_sids(40, levels=2, codebook_size=4, seed=5)
    model = tiny_model(sids, seed=5)
    batch = _histories(3, 5, 40, seed=5)
    res = model.beam_search(batch, 40)
    ids, mask = model.encode_histories(batch)
    all_tok = torch.from_numpy(model.vocab.item_tokens(sids)[1:])
    brute = sequence_logprobs(model, ids, mask, all_tok)                       # (U, N)
    order = brute.argsort(1, descending=True)
    assert_same_ranking(res.items, res.scores, order + 1, brute.gather(1, order))


def _reference_beam(model, ids, mask, codes, beams):
    """Textbook beam search by plain teacher forcing over explicit prefixes (no cache, no trie)."""
    vocab = model.vocab
    tok = torch.from_numpy(vocab.encode_codes(codes[1:]))                              # (N, L+1)
    out_items, out_scores = [], []
    for u in range(ids.shape[0]):
        kept = [()]
        for t in range(vocab.id_length):
            cands = sorted({tuple(r[:t + 1].tolist()) for r in tok if tuple(r[:t].tolist()) in kept})
            rows = torch.tensor(cands)
            lp = sequence_logprobs(model, ids[u:u + 1], mask[u:u + 1], rows)[0]
            top = lp.argsort(descending=True)[:beams]
            kept = [cands[i] for i in top.tolist()]
            scores = lp[top]
        item_of = {tuple(r.tolist()): i + 1 for i, r in enumerate(tok)}
        out_items.append([item_of[k] for k in kept])
        out_scores.append(scores)
    return torch.tensor(out_items), torch.stack(out_scores)


def test_narrow_beam_equals_reference_beam_search():
    sids = random_sids(60, levels=2, codebook_size=5, seed=6)
    model = tiny_model(sids, seed=6)
    batch = _histories(3, 5, 60, seed=6)
    res = model.beam_search(batch, 4)
    ids, mask = model.encode_histories(batch)
    ref_items, ref_scores = _reference_beam(model, ids, mask, sids.codes, 4)
    assert_same_ranking(res.items, res.scores, ref_items, ref_scores)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_items=st.integers(1, 40), levels=st.integers(1, 3), codebook=st.integers(2, 5),
       beams=st.integers(1, 45), seed=st.integers(0, 10_000), exclude=st.booleans())
def test_prefix_constraint_never_emits_an_invalid_id(num_items, levels, codebook, beams, seed, exclude):
    sids = random_sids(num_items, levels=levels, codebook_size=codebook, seed=seed, collide=0.4)
    model = tiny_model(sids, seed=seed, exclude_history=exclude, d_model=8, d_ff=16, num_heads=1)
    batch = _histories(3, 4, num_items, seed=seed)
    res = model.beam_search(batch, beams)
    tok = torch.from_numpy(model.vocab.item_tokens(sids))
    for u in range(3):
        found = res.items[u][res.items[u] > 0]
        assert len(set(found.tolist())) == len(found)                         # distinct
        assert ((found >= 1) & (found <= num_items)).all()                    # real items
        assert torch.equal(res.tokens[u][res.items[u] > 0], tok[found])      # the tokens are its ID
        assert torch.isfinite(res.scores[u][res.items[u] > 0]).all()
        assert (res.scores[u][res.items[u] == 0] == -torch.inf).all()
        assert (res.scores[u][:-1] >= res.scores[u][1:]).all()               # best first
        hist = set(batch.items[u].tolist()) - {0} if exclude else set()
        assert not set(found.tolist()) & hist
        if beams >= num_items:                                                # exhaustive
            assert len(found) == num_items - len(hist)


def test_beam_width_below_k_is_refused():
    sids = random_sids(30, levels=2, codebook_size=4)
    model = tiny_model(sids, beam_width=10)
    with pytest.raises(RecError, match=r"beam_width=10 is smaller than the 20 items"):
        model.generate(_histories(2, 3, 30), 20)


def test_evaluator_hit_needs_the_disambiguation_code():
    """Items 2k-1 and 2k share their L codes; only the generated one with the right d is a hit."""
    prefixes = np.repeat(np.array([[a, b] for a in range(3) for b in range(3)]), 2, axis=0)   # 18 items
    sids = sids_from_prefixes(prefixes, codebook_size=3)
    model = tiny_model(sids, seed=7, num_user_tokens=0, beam_width=18)
    hist = [[1, 2]] * 2                                        # both users: the same history
    batch = HistoryBatch(torch.arange(2), torch.tensor(hist), torch.zeros(2, 2, dtype=torch.long))
    ranked = model.beam_search(batch, 18).items[0]
    top = int(ranked[0])
    sibling = top + 1 if top % 2 == 1 else top - 1              # same L codes, other d
    assert sids.codes[top, :2].tolist() == sids.codes[sibling, :2].tolist()
    split = make_split(train=hist, valid=[top, sibling], test=[top, sibling], num_items=18)
    res = Evaluator(ks=(1, 5, 10), num_generated=18, exclude_history=False, progress=False
                    ).evaluate(model, split, "valid")
    expect_sibling_rank = ranked.tolist().index(sibling)
    assert res.ranks["full"].tolist() == [0, expect_sibling_rank]
    assert expect_sibling_rank > 0
