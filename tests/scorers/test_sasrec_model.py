"""The SASRec-family scorer: causality, padding/truncation behaviour, the Scorer interface, bad config."""
import pytest
import torch

from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError
from retrieval.evaluation.interfaces import Scorer
from retrieval.scorers import SequentialScorer

VARIANTS = [(t, m) for t in (False, True) for m in (False, True)]


def _model(use_time, use_mhc, pre_ln=True, maxlen=12):
    torch.manual_seed(0)
    return SequentialScorer(num_items=40, maxlen=maxlen, hidden=16, num_blocks=2, num_heads=2,
                            dropout=0.0, use_time=use_time, use_mhc=use_mhc, pre_ln=pre_ln).eval()


def _history(B=3, L=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 41, (B, L), generator=g)
    times = torch.cumsum(torch.randint(1, 1000, (B, L), generator=g), 1)
    return items, times


@pytest.mark.parametrize("use_time,use_mhc", VARIANTS)
def test_scores_at_position_t_do_not_depend_on_later_items(use_time, use_mhc):
    m = _model(use_time, use_mhc)
    items, times = _history()
    changed, ctimes = items.clone(), times.clone()
    t = 6
    changed[:, t + 1:] = (changed[:, t + 1:] % 40) + 1                  # different later items
    ctimes[:, t + 1:] += 12345                                           # and later times
    with torch.no_grad():
        a, b = m.encode(items, times), m.encode(changed, ctimes)
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("use_time,use_mhc", VARIANTS)
def test_left_padding_and_truncation_do_not_change_scores(use_time, use_mhc):
    """The evaluator passes 200 right-aligned columns; the model must read only the last maxlen
    items and ignore padding, whatever the width."""
    m = _model(use_time, use_mhc, maxlen=12)
    items, times = _history(L=12)
    items[1, :5] = 0
    times[1, :5] = 0
    pad = torch.zeros(3, 30, dtype=torch.long)
    longer = torch.randint(1, 41, (3, 30))                              # older items beyond maxlen
    with torch.no_grad():
        base = m.score_all(HistoryBatch(torch.arange(3), items, times))
        padded = m.score_all(HistoryBatch(torch.arange(3), torch.cat([pad, items], 1),
                                          torch.cat([pad, times], 1)))
        older = torch.cat([longer, items], 1)
        older[1, :35] = 0                                                # row 1 stays short
        truncated = m.score_all(HistoryBatch(torch.arange(3), older,
                                             torch.cat([longer * 0 + 1, times], 1) * (older > 0)))
    assert base.shape == (3, 41)
    assert torch.allclose(base, padded, atol=1e-5)
    assert torch.allclose(base, truncated, atol=1e-5)


def test_scorer_interface_and_variant_names():
    names = []
    for use_time, use_mhc in VARIANTS:
        m = _model(use_time, use_mhc)
        assert isinstance(m, Scorer)
        names.append(m.variant)
    assert names == ["sasrec", "sasrec-mhc", "tisasrec", "tisasrec-mhc"]


def test_post_ln_variant_is_a_different_network():
    items, times = _history()
    with torch.no_grad():
        a = _model(False, False, pre_ln=True).encode(items)
        b = _model(False, False, pre_ln=False).encode(items)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("key,value", [("maxlen", 0), ("maxlen", -3), ("hidden", 0), ("num_blocks", 0)])
def test_non_positive_sizes_are_rejected(key, value):
    with pytest.raises(RecError, match=f"SequentialScorer.{key}"):
        SequentialScorer(num_items=10, **{key: value})


def test_heads_must_divide_hidden():
    with pytest.raises(RecError, match="num_heads"):
        SequentialScorer(num_items=10, hidden=50, num_heads=3)


def test_bert_style_options_change_the_network_and_are_recorded():
    """ffn_mult / activation / init_std / embedding_norm (the S3Rec code's BERT-style SASRec):
    named in the config only when set, so default checkpoints keep their signature."""
    torch.manual_seed(0)
    plain = SequentialScorer(num_items=300, maxlen=12, hidden=16, num_heads=2, dropout=0.0)
    torch.manual_seed(0)
    bert = SequentialScorer(num_items=300, maxlen=12, hidden=16, num_heads=2, dropout=0.0,
                            pre_ln=False, ffn_mult=4, activation="gelu", init_std=0.02,
                            embedding_norm=True)
    assert not {"ffn_mult", "activation", "init_std", "embedding_norm"} & set(plain.config)
    assert bert.config["ffn_mult"] == 4 and bert.config["activation"] == "gelu"
    assert bert.config["init_std"] == 0.02 and bert.config["embedding_norm"] is True
    assert bert.blocks[0].ffn.fc1.weight.shape == (64, 16)
    w = bert.item_emb.weight[1:].detach()
    assert abs(float(w.std()) - 0.02) < 0.002                            # N(0, 0.02), not Xavier
    assert abs(float(plain.item_emb.weight[1:].detach().std()) - 0.02) > 0.02
    items, _ = _history()
    with torch.no_grad():
        out = bert.eval().encode(items)
    assert torch.isfinite(out).all()
    assert bert.num_parameters() > plain.num_parameters()


@pytest.mark.parametrize("kwargs,match", [({"activation": "tanh"}, "activation"),
                                          ({"ffn_mult": 0}, "ffn_mult"),
                                          ({"init_std": -1.0}, "init_std")])
def test_bad_style_options_are_rejected(kwargs, match):
    with pytest.raises(RecError, match=f"SequentialScorer.{match}"):
        SequentialScorer(num_items=10, **kwargs)
