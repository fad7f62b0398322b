"""Negative samplers: popularity follows count^alpha, hard negatives never hit the history or the
target, mixtures hold exact ratios, curriculum phases and the growing count switch as configured."""
import gin
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from retrieval.data.types import ItemCatalogue, SplitData
from retrieval.core.errors import RecError
from retrieval.negatives.base import NegativeSampler
from retrieval.negatives.item_index import ItemIndex
from retrieval.negatives.base import (NEGATIVE_SAMPLERS, BatchHistory, build_negative_sampler,
                                 history_keys, in_history)
from retrieval.negatives.samplers import (CurriculumNegativeSampler, GrowingCountSampler, HardNegativeSampler,
                                MixtureNegativeSampler, NegativeCountSchedule,
                                PopularityNegativeSampler, apportion, slot_assignment,
                                wants_content_embeddings)


def tiny_split(histories: list[list[int]], num_items: int) -> SplitData:
    """A SplitData whose training sequences are `histories` (valid/test targets are unused here)."""
    lengths = [len(h) for h in histories]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    users = len(histories)
    names = np.array([""] + [str(i) for i in range(1, num_items + 1)], dtype=object)
    zeros = np.zeros(users, dtype=np.int64)
    return SplitData("tiny", offsets, items, np.arange(len(items), dtype=np.int64), zeros + 1, zeros,
                     zeros + 1, zeros, np.array([str(u) for u in range(users)], dtype=object),
                     ItemCatalogue(names, np.array([""] * (num_items + 1), dtype=object)), True, "fp")


def random_split(num_users, num_items, max_len, seed) -> SplitData:
    rng = np.random.default_rng(seed)
    hist = [rng.choice(np.arange(1, num_items + 1), size=int(rng.integers(1, max_len + 1)), replace=False)
            for _ in range(num_users)]
    return tiny_split(hist, num_items)


def positions(split: SplitData):
    """(users, positives): each user's training items as positives, as the trainer flattens them."""
    users = np.repeat(np.arange(split.num_users), split.train_lengths)
    return users, split.train_items.copy()


# -- popularity ---------------------------------------------------------------------------------
# Users 0..9 hold items u+1..10, so item i is counted i times; items 11, 12 are never trained on.
POP_SPLIT = tiny_split([list(range(u + 1, 11)) for u in range(10)], 12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_popularity_frequencies_follow_count_power_alpha(alpha):
    s = PopularityNegativeSampler(POP_SPLIT, seed=1, alpha=alpha)
    users, pos = np.full(1000, 9), np.full(1000, 10)                     # user 9 holds item 10 only
    out = s.sample(users, pos, 200)                                      # 200,000 draws
    counts = np.bincount(out.ravel(), minlength=13)
    assert counts[0] == 0 and counts[10:].sum() == 0                    # history + never-seen items
    expected = np.arange(1, 10, dtype=float) ** alpha
    expected = expected / expected.sum() * out.size
    assert chisquare(counts[1:10], expected).pvalue > 1e-3
    np.testing.assert_allclose(counts[1:10] / expected, 1.0, atol=0.03)


def test_popularity_log_q_is_the_log_of_the_sampling_distribution():
    lq = PopularityNegativeSampler(POP_SPLIT, alpha=1.0).log_q()
    probs = lq.exp().numpy()
    np.testing.assert_allclose(probs[1:11], np.arange(1, 11) / 55.0, rtol=1e-6)
    assert probs[0] == 0 and probs[11] == 0 and probs.sum() == pytest.approx(1.0)


def test_popularity_fallback_still_excludes_the_history():
    s = PopularityNegativeSampler(POP_SPLIT, seed=2, max_rounds=0)      # every draw falls back
    users, pos = positions(POP_SPLIT)
    out = s.sample(users, pos, 5)
    assert not in_history(history_keys(POP_SPLIT), users[:, None], out, 12).any()


# -- hard negatives -----------------------------------------------------------------------------
def assert_no_history_or_target(split, users, pos, out):
    assert (out > 0).all() and (out <= split.num_items).all()
    assert not in_history(history_keys(split), users[:, None], out, split.num_items).any()
    assert not (out == pos[:, None]).any()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), pool=st.integers(0, 12),
       query=st.sampled_from(["state", "sequence", "target"]))
def test_hard_negatives_never_contain_history_or_target(seed, n, pool, query):
    split = random_split(30, 60, 25, seed)
    emb = torch.randn(61, 8, generator=torch.Generator().manual_seed(seed))
    s = HardNegativeSampler(split, seed=seed, query=query, pool_size=pool)
    s.bind_item_embeddings(lambda: emb)
    users, pos = positions(split)
    hidden = torch.randn(len(users), 8)
    out = s.sample(users, pos, n, hidden)
    assert out.shape == (len(users), n)
    assert_no_history_or_target(split, users, pos, out)
    assert all(len(set(row)) == n for row in out)                        # distinct per position


def test_hard_negatives_are_the_nearest_allowed_items():
    split = random_split(20, 80, 15, 3)
    emb = torch.randn(81, 8, generator=torch.Generator().manual_seed(0))
    s = HardNegativeSampler(split, seed=0, query="target")
    s.bind_item_embeddings(lambda: emb)
    users, pos = positions(split)
    out = s.sample(users, pos, 3)
    e = emb.numpy()
    for u, p, row in zip(users, pos, out):                              # reference: plain loop
        scores = e[1:] @ e[p]
        banned = set(split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]]) | {p}
        allowed = [i for i in np.argsort(-scores) + 1 if i not in banned]
        assert set(row) == set(allowed[:3])


def test_sequence_query_mines_once_per_sequence_from_its_last_state():
    """query='sequence': every position of a user gets the nearest allowed items to the state at
    the user's last position (pool 0: exactly the n nearest, so all its positions agree)."""
    split = random_split(20, 80, 15, 7)
    emb = torch.randn(81, 8, generator=torch.Generator().manual_seed(1))
    s = HardNegativeSampler(split, seed=0, query="sequence")
    s.bind_item_embeddings(lambda: emb)
    users, pos = positions(split)
    hidden = torch.randn(len(users), 8, generator=torch.Generator().manual_seed(2))
    out = s.sample(users, pos, 3, hidden)
    e = emb.numpy()
    for u in range(split.num_users):
        rows = np.flatnonzero(users == u)
        scores = e[1:] @ hidden[rows[-1]].numpy()                        # the last state only
        banned = set(split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]])
        allowed = [i for i in np.argsort(-scores) + 1 if i not in banned]
        for r in rows:
            assert set(out[r]) == set(allowed[:3])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), max_cells=st.sampled_from([0, 1 << 26]))
def test_batch_history_equals_the_binary_search(seed, max_cells):
    """The dense per-batch table (and its fallback, max_cells 0) answers as in_history does."""
    split = random_split(25, 40, 20, seed)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 25, 60)
    items = rng.integers(0, 41, (60, 7))
    keys = history_keys(split)
    hist = BatchHistory(keys, users, split.num_items, max_cells=max_cells)
    assert (hist.mask is None) == (max_cells == 0)
    rows = rng.permutation(60)[:35]
    np.testing.assert_array_equal(hist.contains(rows, items[rows]),
                                  in_history(keys, users[rows][:, None], items[rows], 40))


@pytest.mark.parametrize("pool", [0, 10])
def test_hard_target_candidate_table_equals_searching_every_step(monkeypatch, pool):
    """Target mode looks the nearest items up in a per-index-build table; same draws as a search."""
    split = random_split(40, 120, 30, 5)
    table = {"w": torch.randn(121, 8, generator=torch.Generator().manual_seed(2))}
    fast = HardNegativeSampler(split, seed=4, query="target", pool_size=pool, refresh_every=2)
    slow = HardNegativeSampler(split, seed=4, query="target", pool_size=pool, refresh_every=2)
    monkeypatch.setattr(slow, "MAX_CANDIDATE_ENTRIES", 0)                # forces the per-step search
    monkeypatch.setattr(fast, "HISTORY_COLUMNS", 1)   # most histories exceed the table's spare columns
    for s in (fast, slow):
        s.bind_item_embeddings(lambda: table["w"])
    users, pos = positions(split)
    searched, search = [], ItemIndex.search               # queries of the fast sampler's searches
    monkeypatch.setattr(ItemIndex, "search", lambda self, q, k, **kw: (
        self is fast.index and searched.append((len(q), k))) or search(self, q, k, **kw))
    for step in range(4):                                               # across two index refreshes
        a, b = fast.sample(users, pos, 4), slow.sample(users, pos, 4)
        np.testing.assert_array_equal(a, b)
        assert_no_history_or_target(split, users, pos, a)
        table["w"] = table["w"] + 0.5 * torch.randn(121, 8, generator=torch.Generator().manual_seed(step))
    assert fast.candidates is not None and slow.candidates is None and fast.refreshes == 2
    # Both paths ran: rows read from the table, and rows whose history starved it searched.
    per_step = [q for q, k in searched if k == max(4, pool)]           # table builds use more columns
    assert per_step and all(0 < q < len(users) for q in per_step)


def test_content_space_hard_sampler_keeps_its_matrix_and_ignores_the_live_table():
    split = random_split(30, 50, 20, 1)
    content = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)   # (N, d) layout
    mix = MixtureNegativeSampler(split, seed=0, ratios={"hard": 1.0, "uniform": 0.0})
    hard = mix.components["hard"]
    hard.embeddings, hard.query = "content", "target"
    assert wants_content_embeddings(mix) and not wants_content_embeddings(HardNegativeSampler(split))
    mix.bind_item_embeddings(content)
    mix.bind_item_embeddings(lambda: torch.randn(51, 8))                # the trainer's call: ignored
    users, pos = positions(split)
    out = mix.sample(users, pos, 2)
    np.testing.assert_array_equal(hard.index.vectors, content)
    assert_no_history_or_target(split, users, pos, out)
    with pytest.raises(RecError, match="query='target'"):
        HardNegativeSampler(split, embeddings="content", query="state")


def test_hard_negatives_on_real_beauty_users_skip_their_history(data_root):
    from retrieval.data.registry import load_split
    split = load_split(name="amazon-beauty")
    rows = np.random.default_rng(0).choice(split.num_users, size=300, replace=False)
    users = np.repeat(rows, split.train_lengths[rows])
    pos = np.concatenate([split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]]
                          for u in rows])
    emb = torch.randn(split.num_items + 1, 32, generator=torch.Generator().manual_seed(1))
    s = HardNegativeSampler(split, query="state")
    s.bind_item_embeddings(lambda: emb)
    # States equal to the positives' embeddings: their nearest items are the history itself.
    out = s.sample(users, pos, 5, hidden=emb[torch.from_numpy(pos)])
    assert_no_history_or_target(split, users, pos, out)


def test_hard_index_is_refreshed_every_r_steps_from_the_live_table():
    split = random_split(10, 40, 5, 1)
    reads = []

    def table():
        reads.append(len(reads))
        return torch.randn(41, 4)

    s = HardNegativeSampler(split, query="target", refresh_every=3)
    s.bind_item_embeddings(table)
    users, pos = positions(split)
    for _ in range(7):
        s.sample(users, pos, 2)
    assert len(reads) == 3                                               # steps 0, 3 and 6

    fixed = HardNegativeSampler(split, query="target", refresh_every=1)
    fixed.bind_item_embeddings(np.random.default_rng(0).normal(size=(40, 4)))   # content (N, d)
    for _ in range(4):
        fixed.sample(users, pos, 2)
    assert fixed.refreshes == 1                                          # a fixed matrix: built once


def test_hard_sampler_needs_embeddings_and_states():
    split = random_split(5, 20, 3, 0)
    users, pos = positions(split)
    s = HardNegativeSampler(split, query="state")
    with pytest.raises(RecError, match="bind_item_embeddings"):
        s.sample(users, pos, 1, torch.zeros(len(users), 4))
    s.bind_item_embeddings(lambda: torch.randn(21, 4))
    with pytest.raises(RecError, match="hidden"):
        s.sample(users, pos, 1)


# -- mixtures -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(ratios=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4).filter(lambda r: sum(r) > 0.01),
       rows=st.integers(1, 40), n=st.integers(1, 12), seed=st.integers(0, 100))
def test_slot_assignment_has_exact_batch_totals_and_mixes_every_row(ratios, rows, n, seed):
    r = np.array(ratios) / sum(ratios)
    out = slot_assignment(r, rows, n, np.random.default_rng(seed))
    totals = np.bincount(out.ravel(), minlength=len(r))
    np.testing.assert_array_equal(totals, apportion(r, rows * n))
    assert np.abs(totals - r * rows * n).max() < 1.0 + 1e-9
    per_row = np.stack([(out == c).sum(1) for c in range(len(r))], axis=1)    # (rows, C)
    assert (per_row >= np.floor(r * n - 1e-6)).all()                     # every row gets its share


class TagSampler(NegativeSampler):
    """A fake component: negative = user·10 + tag, so the output says who drew it for which row."""

    def __init__(self, tag):
        self.tag, self.calls = tag, []

    def sample(self, users, positives, n, hidden=None):
        self.calls.append(len(users))
        return np.repeat((users * 10 + self.tag)[:, None], n, axis=1)

    def log_q(self):
        return None

    def state(self):
        return {}

    def load_state(self, state):
        pass


@pytest.fixture
def tag_components(monkeypatch):
    for tag, name in enumerate(["a", "b", "c"], start=1):
        monkeypatch.setitem(NEGATIVE_SAMPLERS, name, lambda split, seed, tag=tag: TagSampler(tag))


def test_mixture_ratios_are_exact_per_batch_and_draws_land_in_their_rows(tag_components):
    split = random_split(50, 30, 5, 0)
    s = MixtureNegativeSampler(split, seed=0, ratios={"a": 0.5, "b": 0.3, "c": 0.2})
    users = np.arange(50)
    out = s.sample(users, np.ones(50, dtype=np.int64), 10)
    np.testing.assert_array_equal(out // 10, users[:, None].repeat(10, 1))   # each row's own draws
    tags = out % 10
    for c, expected in ((1, 5), (2, 3), (3, 2)):
        assert ((tags == c).sum(1) == expected).all()                   # 0.5/0.3/0.2 of 10, every row
    odd = s.sample(users[:7], np.ones(7, dtype=np.int64), 1) % 10        # 7 slots: 3.5/2.1/1.4
    np.testing.assert_array_equal(np.bincount(odd.ravel(), minlength=4)[1:], [4, 2, 1])


def test_mixture_of_real_samplers_excludes_history_and_restores_its_rng():
    split = random_split(40, 100, 20, 5)
    emb = torch.randn(101, 8, generator=torch.Generator().manual_seed(0))
    s = MixtureNegativeSampler(split, seed=3)                           # hard/uniform/popularity
    s.bind_item_embeddings(lambda: emb)
    users, pos = positions(split)
    hidden = torch.randn(len(users), 8)
    saved = s.state()
    first = s.sample(users, pos, 10, hidden)
    assert_no_history_or_target(split, users, pos, first)
    s.load_state(saved)
    np.testing.assert_array_equal(s.sample(users, pos, 10, hidden), first)


def test_mixture_is_selected_and_configured_through_gin():
    split = random_split(10, 50, 5, 0)
    gin.clear_config()
    try:
        gin.parse_config(["build_negative_sampler.name = 'mixture'",
                          "MixtureNegativeSampler.ratios = {'uniform': 0.7, 'popularity': 0.3}",
                          "PopularityNegativeSampler.alpha = 0.5"])
        s = build_negative_sampler(split)
        assert isinstance(s, MixtureNegativeSampler) and s.names == ["uniform", "popularity"]
        assert s.components["popularity"].alpha == 0.5
    finally:
        gin.clear_config()


def test_mixture_rejects_bad_ratios():
    split = random_split(5, 20, 3, 0)
    with pytest.raises(RecError, match="ratios"):
        MixtureNegativeSampler(split, ratios={"uniform": -1.0})
    with pytest.raises(RecError, match="unknown negative sampler"):
        MixtureNegativeSampler(split, ratios={"nearest": 1.0})


# -- curriculum and growing count -------------------------------------------------------------------
def test_curriculum_switches_phase_at_the_configured_epochs(tag_components):
    split = random_split(20, 30, 5, 0)
    s = CurriculumNegativeSampler(split, phase_epochs=(0, 2, 5),
                                  phase_ratios=({"a": 1.0}, {"a": 0.5, "b": 0.5}, {"b": 0.2, "c": 0.8}))
    users = np.arange(20)
    seen = {}
    for epoch in range(7):
        s.set_epoch(epoch)
        tags = s.sample(users, np.ones(20, dtype=np.int64), 10) % 10
        seen[epoch] = (s.phase, tuple(np.bincount(tags.ravel(), minlength=4)[1:]))
    assert [seen[e][0] for e in range(7)] == [0, 0, 1, 1, 1, 2, 2]
    assert seen[1][1] == (200, 0, 0) and seen[2][1] == (100, 100, 0) and seen[6][1] == (0, 40, 160)


def test_default_curriculum_grows_the_hard_share():
    s = CurriculumNegativeSampler(random_split(5, 20, 3, 0))
    shares = []
    for epoch in (0, 5, 10):
        s.set_epoch(epoch)
        shares.append(s.ratios[s.names.index("hard")] / s.ratios.sum())
    assert shares[0] < shares[1] < shares[2]


def test_curriculum_rejects_bad_phase_epochs():
    with pytest.raises(RecError, match="phase_epochs"):
        CurriculumNegativeSampler(random_split(5, 20, 3, 0), phase_epochs=(1, 3),
                                  phase_ratios=({"uniform": 1.0}, {"uniform": 1.0}))
    with pytest.raises(RecError, match="positive sum"):
        CurriculumNegativeSampler(random_split(5, 20, 3, 0), phase_epochs=(0, 3),
                                  phase_ratios=({"uniform": 1.0}, {"uniform": 0.0}))


def test_negative_count_schedule_ramps_linearly_then_holds():
    sched = NegativeCountSchedule(start=1, end=5, ramp_epochs=10)
    assert [sched(e) for e in range(13)] == [1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5]
    with pytest.raises(RecError):
        NegativeCountSchedule(start=3, end=2)


def test_growing_sampler_draws_the_scheduled_count_per_epoch():
    split = random_split(10, 50, 5, 0)
    gin.clear_config()
    try:
        gin.parse_config(["NegativeCountSchedule.start = 2", "NegativeCountSchedule.end = 6",
                          "NegativeCountSchedule.ramp_epochs = 4",
                          "GrowingCountSampler.base = 'popularity'"])
        s = GrowingCountSampler(split)
    finally:
        gin.clear_config()
    users, pos = positions(split)
    widths = []
    for epoch in range(6):
        s.set_epoch(epoch)
        out = s.sample(users, pos, 1)                                    # the loss's n is replaced
        assert_no_history_or_target(split, users, pos, out)
        widths.append(out.shape[1])
    assert widths == [2, 3, 4, 5, 6, 6]
    assert s.log_q() is not None                                         # the base's (popularity) q
