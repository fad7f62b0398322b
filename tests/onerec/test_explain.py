"""Explanations (onerec.explain): code names computed from the catalogue, per-level probabilities
that multiply to the model's item probability, the history items sharing a prefix, and the
trunk's attention over the history."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.explain import explain, history_attention, item_probabilities, plot_attention
from onerec.parallel_generator import ParallelSidGenerator
from retrieval.core.errors import RecError
from retrieval.data.types import ItemCatalogue
from rqvae.artifact import code_names

from onerec_helpers import random_sids, tiny_model


def _catalogue(categories: list[str]) -> ItemCatalogue:
    n = len(categories)
    return ItemCatalogue(raw_ids=np.array([""] + [f"i{j}" for j in range(1, n + 1)], dtype=object),
                         titles=np.array([""] + [f"title {j}" for j in range(1, n + 1)], dtype=object),
                         fields={"categories": np.array([""] + categories, dtype=object)})


def test_code_names_pick_the_value_most_specific_to_the_items_under_a_prefix():
    # Items 1-4 under level-1 code 0, items 5-8 under code 1; "Beauty" is on every item, so it
    # names nothing; "Nails" is the most common value under code 0, "Hair" under code 1, and under
    # prefix 1-1 (items 6, 8: Hair|Dye, Skin|Hair) "Hair" beats the rarer "Dye".
    cats = ["Beauty|Nails", "Beauty|Nails|Polish", "Beauty|Nails", "Beauty|Skin",
            "Beauty|Hair", "Beauty|Hair|Dye", "Beauty|Hair", "Beauty|Skin|Hair"]
    codes = np.array([[0, 0, 0]] + [[0, j % 2, 0] for j in range(4)] + [[1, j % 2, 0] for j in range(4)])
    names = code_names(codes, _catalogue(cats))
    assert names["field"] == "categories"
    assert names["1"] == {"0": "Nails", "1": "Hair"}
    assert names["2"]["0-0"] == "Nails" and names["2"]["1-1"] == "Hair"      # items 2,4 / 6,8


def _parallel(sids, seed=0):
    torch.manual_seed(seed)
    return ParallelSidGenerator(sids, d_model=16, num_layers=2, num_heads=2, dropout=0.0, max_len=8,
                                beam_width=10, exclude_history=True, score_batch=4).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_level_probabilities_multiply_to_the_beams_item_probability(seed):
    sids = random_sids(40, levels=3, codebook_size=4, seed=seed)
    model = _parallel(sids, seed)
    history = np.array([3, 17, 8, 25])
    batch_items = torch.from_numpy(history)[None]
    from retrieval.data.batch import HistoryBatch
    beam = model.beam_search(HistoryBatch(torch.zeros(1, dtype=torch.long), batch_items,
                                          torch.zeros_like(batch_items)))
    top = beam.items[0, :5].tolist()
    probs = item_probabilities(model, history)
    # the beam's scores, normalised over the catalogue less the history, are these probabilities
    allowed = torch.ones(41, dtype=torch.bool)
    allowed[0], allowed[torch.from_numpy(history)] = False, False
    logz = torch.logsumexp(model.item_scores(model.encode(batch_items)[:, -1])[0].double()[allowed], 0)
    assert torch.allclose(probs[top], torch.exp(beam.scores[0, :5].double() - logz), rtol=1e-5)
    assert float(probs[torch.from_numpy(history)].sum()) == 0.0 and probs.sum().item() == pytest.approx(1.0)

    raw_ids = np.array([f"r{j}" for j in range(41)], dtype=object)
    codes = sids.codes
    for e in explain(model, codes, {"1": {}, "2": {}}, raw_ids, history, top):
        assert np.prod(e.level_probs) == pytest.approx(e.probability, rel=1e-9)
        assert e.probability == pytest.approx(float(probs[e.item]))
        assert all(0.0 <= q <= 1.0 for q in e.level_probs) and len(e.level_probs) == codes.shape[1]
        assert e.codes == codes[e.item].tolist()
        want1 = [f"r{j}" for j in history if codes[j, 0] == codes[e.item, 0]]
        want2 = [f"r{j}" for j in history if (codes[j, :2] == codes[e.item, :2]).all()]
        assert e.shares_level1 == want1 and e.shares_level2 == want2


def test_attention_over_the_history_is_a_distribution_per_layer_and_plots(tmp_path):
    model = _parallel(random_sids(30, levels=2, codebook_size=4))
    history = np.array([4, 9, 2, 11, 5])
    w = history_attention(model, history)
    assert w.shape == (2, 5) and np.allclose(w.sum(1), 1.0) and (w >= 0).all()
    plot_attention(tmp_path / "why.png", w, [f"item {j}" for j in history])
    assert (tmp_path / "why.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_attention_capture_leaves_the_states_unchanged():
    model = _parallel(random_sids(30, levels=2, codebook_size=4))
    items = torch.tensor([[0, 0, 4, 9, 2], [1, 3, 5, 7, 9]])
    maps: list = []
    assert torch.equal(model.encode(items), model.encode(items, attention=maps)) and len(maps) == 2


def test_explain_refuses_a_generator_that_does_not_score_every_item():
    with pytest.raises(RecError, match="--explain needs a generator that scores every item"):
        item_probabilities(tiny_model(random_sids(20, levels=2, codebook_size=4)), np.array([1, 2]))
