"""The training strategies wired into the scorer (issue 6): the similarity head in the model and the
losses, the semantic-consistency and interest-contrast terms added by the trainer, the hard-negative
index refresh at epoch starts, and exact resume with all of them on."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.scorers.auxiliary_losses import AuxiliaryLosses
from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers import SequentialScorer
from retrieval.negatives.samplers import HardNegativeSampler
from retrieval.scorers.trainer import ScorerTrainer
from retrieval.scorers.semantic_losses import (InterestContrastLoss, SemanticConsistencyLoss,
                                       interest_contrast_loss, interest_proxies, neighbour_table)
from retrieval.scorers.similarity import SIMILARITIES, make_similarity
from retrieval.core.checkpoints import set_seed

from tiny_splits import synthetic_split


def _split(seed=0, users=120, items=60):
    return synthetic_split(users, items, k=2, mean_length=10.0, seed=seed)


def _model(num_items, **kw):
    return SequentialScorer(num_items=num_items, maxlen=10, hidden=8, num_blocks=1, num_heads=1,
                            dropout=0.2, **kw)


# ------------------------------------------------------------------ similarity head
def test_default_head_is_the_dot_product_and_leaves_the_config_unchanged():
    torch.manual_seed(0)
    model = _model(30).eval()
    items = torch.tensor([[0, 3, 4], [5, 6, 7]])
    from retrieval.data.batch import HistoryBatch
    batch = HistoryBatch(users=torch.arange(2), items=items, times=torch.zeros_like(items))
    h = model.encode(items)[:, -1]
    assert model.similarity.name == "dot" and "similarity" not in model.config
    assert torch.equal(model.score_all(batch), h @ model.item_emb.weight.T)


def test_a_non_dot_head_scores_the_catalogue_and_is_named_in_the_config():
    import gin
    gin.clear_config()
    try:
        gin.parse_config(["make_similarity.name = 'cosine'", "CosineSimilarity.temperature = 0.5"])
        torch.manual_seed(0)
        model = _model(30).eval()
    finally:
        gin.clear_config()
    from retrieval.data.batch import HistoryBatch
    items = torch.tensor([[1, 2, 3]])
    scores = model.score_all(HistoryBatch(users=torch.arange(1), items=items, times=torch.zeros_like(items)))
    h, e = model.encode(items)[0, -1], model.item_emb.weight[9]
    assert model.config["similarity"] == "cosine"
    assert scores[0, 9].item() == pytest.approx((F.cosine_similarity(h, e, dim=0) / 0.5).item(), rel=1e-5)


def _inputs(seed=0, P=6, N=12, d=4, n=3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(P, d, generator=g, requires_grad=True)
    emb = torch.randn(N + 1, d, generator=g)
    emb[0] = 0
    emb.requires_grad_(True)
    pos = torch.randint(1, N + 1, (P,), generator=g)
    neg = torch.randint(1, N + 1, (P, n), generator=g)
    return hidden, emb, pos, neg


@pytest.mark.parametrize("name", ["ce", "bce", "sampled_softmax", "infonce", "bpr"])
def test_passing_the_dot_head_changes_no_loss_bit(name):
    hidden, emb, pos, neg = _inputs()
    loss = ScorerLoss(name, num_negatives=3)
    assert torch.equal(loss(hidden, pos, neg, emb), loss(hidden, pos, neg, emb,
                                                         similarity=make_similarity("dot", 4)))


@pytest.mark.parametrize("sim_name", sorted(set(SIMILARITIES) - {"dot"}))
def test_full_ce_with_any_head_is_cross_entropy_over_its_catalogue_scores(sim_name):
    """ce runs the hand-written full softmax on the head's factored form; value and gradients equal
    autograd cross-entropy over sim.all_items (padding item excluded)."""
    sim = make_similarity(sim_name, 4)
    with torch.no_grad():
        for p in sim.parameters():
            p.add_(0.2)
    hidden, emb, pos, _ = _inputs(1)
    got = ScorerLoss("ce")(hidden, pos, None, emb, similarity=sim)
    g_got = torch.autograd.grad(got, [hidden, emb])
    ref = F.cross_entropy(sim.all_items(hidden, emb)[:, 1:], pos - 1)
    g_ref = torch.autograd.grad(ref, [hidden, emb])
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sampled_softmax_with_a_head_uses_its_pairwise_scores():
    sim = make_similarity("scaled_dot", 4)
    hidden, emb, pos, neg = _inputs(2)
    got = ScorerLoss("sampled_softmax", num_negatives=3)(hidden, pos, neg, emb, similarity=sim)
    logits = torch.cat([(hidden * emb[pos]).sum(-1, keepdim=True),
                        torch.einsum("pd,pnd->pn", hidden, emb[neg])], 1) / 2.0     # sqrt(4) = 2
    ref = F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


# ------------------------------------------------------------------ auxiliary terms
class _Stub(nn.Module):
    """What AuxiliaryLosses reads of a model for the semantic term: similarity and item_emb."""

    def __init__(self, emb):
        super().__init__()
        self.similarity = make_similarity("dot", emb.shape[1])
        self.item_emb = nn.Embedding.from_pretrained(emb, freeze=False)


def test_auxiliary_terms_are_off_by_default_and_semantic_needs_a_table():
    assert not AuxiliaryLosses(SemanticConsistencyLoss(), InterestContrastLoss()).active
    with pytest.raises(RecError, match="similar_item_table.source"):
        AuxiliaryLosses(SemanticConsistencyLoss(weight=0.1))
    with pytest.raises(RecError, match="no similar item"):
        AuxiliaryLosses(SemanticConsistencyLoss(weight=0.1), similar_items=np.zeros((4, 2), np.int64))


def test_semantic_term_by_hand_and_its_gradient_lifts_the_similar_item():
    # Items 1..3 in 2-d; item 1's only similar item is 2; item 3 has none (left out of the mean).
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model = _Stub(emb)
    table = np.array([[0, 0], [2, 0], [1, 3], [0, 0]], dtype=np.int64)
    aux = AuxiliaryLosses(SemanticConsistencyLoss("positive_only", weight=0.5), similar_items=table)
    hidden = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    pos = torch.tensor([1, 3])
    terms = aux(model, None, None, None, hidden, pos, None, draw_negatives=None)
    # Position 0: s(item) = <(2,1),(1,0)> = 2, s(item') = <(2,1),(0,1)> = 1 -> softplus(-(1 - 2)).
    assert terms["semantic"].item() == pytest.approx(0.5 * math.log1p(math.exp(1.0)), rel=1e-6)
    terms["semantic"].backward()
    g = model.item_emb.weight.grad
    # A gradient-descent step moves e_2 along +h (its score rises) and e_1 along -h (falls).
    assert float(-(g[2] @ hidden[0])) > 0 and float(-(g[1] @ hidden[0])) < 0
    assert torch.equal(g[3], torch.zeros(2))


def test_pos_neg_term_draws_negatives_only_when_the_main_loss_has_none():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    table = np.array([[0], [2], [1], [1]], dtype=np.int64)
    aux = AuxiliaryLosses(SemanticConsistencyLoss("pos_neg", weight=1.0, num_negatives=2),
                          similar_items=table)
    hidden, pos = torch.tensor([[2.0, 1.0]]), torch.tensor([1])
    asked = []

    def draw(n):
        asked.append(n)
        return torch.full((1, n), 3)

    value = aux(_Stub(emb), None, None, None, hidden, pos, None, draw)["semantic"]
    # s(item' = 2) = 1, s(neg = 3) = 3: softplus(-(1 - 3)) for both negatives.
    assert asked == [2] and value.item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)
    aux(_Stub(emb), None, None, None, hidden, pos, torch.tensor([[3]]), draw)
    assert asked == [2]


def test_interest_term_contrasts_the_full_and_the_last_k_encodings():
    torch.manual_seed(0)
    model = _model(20).eval()
    items = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    aux = AuxiliaryLosses(interest=InterestContrastLoss(short_k=2, weight=0.3))
    states = model.encode(items)
    got = aux(model, items, None, states, None, None, None, None)["interest"]
    lp, sp = interest_proxies(model.item_emb(items), items, 2)
    ref = 0.3 * interest_contrast_loss(states[:, -1], model.encode(items[:, -2:])[:, -1], lp, sp)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


# ------------------------------------------------------------------ samplers and resume
def test_hard_sampler_rebuilds_its_index_at_every_epoch_start():
    split = _split(users=30, items=20)
    n = split.num_items
    table = {"w": torch.randn(n + 1, 4)}
    s = HardNegativeSampler(split, seed=0, query="target", refresh_every=1000)
    s.bind_item_embeddings(lambda: table["w"])
    users, pos = np.array([0]), np.array([int(split.train_items[0])])
    s.sample(users, pos, 2)
    table["w"] = torch.randn(n + 1, 4)
    s.sample(users, pos, 2)
    assert s.refreshes == 1                                   # within an epoch: refresh_every rules
    s.set_epoch(2)
    s.sample(users, pos, 2)
    assert s.refreshes == 2
    np.testing.assert_array_equal(s.index.vectors, table["w"][1:].numpy())


def _fit_all_on(run_dir, split, table, resume=False, stop_after=None):
    set_seed(0)
    model = _model(split.num_items)
    trainer = ScorerTrainer(num_epochs=3, batch_size=32, eval_every=1, patience=5, progress=False,
                            bucket_batches=2, seed=3)
    sampler = HardNegativeSampler(split, seed=0, query="state", pool_size=6, refresh_every=3)
    aux = AuxiliaryLosses(SemanticConsistencyLoss("positive_only", weight=0.2),
                          InterestContrastLoss(short_k=2, weight=0.1), table, seed=3)
    return trainer.fit(model, split, ScorerLoss("sampled_softmax", num_negatives=3), sampler, run_dir,
                       resume=resume, stop_after_epochs=stop_after, aux=aux)


def test_resume_is_exact_with_hard_negatives_and_both_auxiliary_terms(tmp_path):
    split = _split()
    table = neighbour_table(np.random.default_rng(0).normal(size=(split.num_items, 4)), k=3,
                            num_items=split.num_items)
    full = _fit_all_on(tmp_path / "a", split, table)
    assert _fit_all_on(tmp_path / "b", split, table, stop_after=1) is None
    resumed = _fit_all_on(tmp_path / "b", split, table, resume=True)
    assert full["valid"].metrics == resumed["valid"].metrics and full["test"].metrics == resumed["test"].metrics
    a = load_tensors(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = load_tensors(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
