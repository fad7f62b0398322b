"""Shared helpers of the generative-retrieval tests (tests/onerec/)."""
from __future__ import annotations

import numpy as np
import torch

from onerec.model import OneRecModel
from rqvae.artifact import SemanticIds


def sids_from_prefixes(prefixes: np.ndarray, codebook_size: int, fingerprint: str = "test") -> SemanticIds:
    """An artifact from the items' L-code prefixes (N, L); d numbers items sharing a prefix 0, 1, ..."""
    prefixes = np.asarray(prefixes, dtype=np.int64)
    N, L = prefixes.shape
    d = np.zeros(N, dtype=np.int64)
    seen: dict = {}
    for i, row in enumerate(map(tuple, prefixes)):          # tiny N: a loop is clearest here
        d[i] = seen.get(row, 0)
        seen[row] = d[i] + 1
    codes = np.concatenate([np.full((1, L + 1), -1), np.concatenate([prefixes, d[:, None]], 1)])
    return SemanticIds(codes=codes, codebook_size=codebook_size, dataset_fingerprint=fingerprint)


def random_sids(num_items: int, levels: int, codebook_size: int, seed: int = 0,
                collide: float = 0.3, fingerprint: str = "test") -> SemanticIds:
    """Random codes where a fraction `collide` of the items copies another item's L codes."""
    rng = np.random.default_rng(seed)
    prefixes = rng.integers(0, codebook_size, size=(num_items, levels))
    n_dup = int(num_items * collide)
    if n_dup and num_items > n_dup:
        prefixes[-n_dup:] = prefixes[rng.integers(0, num_items - n_dup, n_dup)]
    return sids_from_prefixes(prefixes, codebook_size, fingerprint)


def tiny_model(sids: SemanticIds, seed: int = 0, beam_width: int = 50, exclude_history: bool = False,
               num_user_tokens: int = 7, **kw) -> OneRecModel:
    """A small random T5 generator in eval mode."""
    torch.manual_seed(seed)
    args = dict(d_model=16, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=8, d_ff=32,
                num_user_tokens=num_user_tokens, beam_width=beam_width,
                exclude_history=exclude_history)
    args.update(kw)
    return OneRecModel(sids, **args).eval()


@torch.no_grad()
def sequence_logprobs(model: OneRecModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_rows: torch.Tensor) -> torch.Tensor:
    """Teacher-forced sum of token log-probabilities of every row of `token_rows` (M, t) for every
    history (U, T): (U, M). Plain `transformers` forward passes, no cache, no trie."""
    U, M = input_ids.shape[0], token_rows.shape[0]
    ids = input_ids.repeat_interleave(M, 0)
    mask = attention_mask.repeat_interleave(M, 0)
    labels = token_rows.repeat(U, 1)                                      # (U*M, t)
    dec_in = torch.cat([torch.ones_like(labels[:, :1]), labels[:, :-1]], 1)   # BOS = 1
    logits = model.t5(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_in).logits
    lp = torch.log_softmax(logits.float(), -1).gather(2, labels[..., None])[..., 0]
    return lp.sum(1).view(U, M)


def assert_same_ranking(items_a, scores_a, items_b, scores_b, tol: float = 1e-4) -> None:
    """Equal ranked lists, except that items whose scores are within `tol` may swap places."""
    items_a, items_b = torch.as_tensor(items_a), torch.as_tensor(items_b)
    scores_a, scores_b = torch.as_tensor(scores_a).float(), torch.as_tensor(scores_b).float()
    finite = torch.isfinite(scores_a)
    assert torch.equal(finite, torch.isfinite(scores_b))
    assert torch.allclose(scores_a[finite], scores_b[finite], atol=tol, rtol=0)
    differ = (items_a != items_b) & finite
    if differ.any():
        # a swap is only acceptable inside a near-tie: the neighbour's score is within tol
        s = scores_a
        gap_prev = torch.cat([torch.full_like(s[:, :1], torch.inf), s[:, :-1] - s[:, 1:]], 1)
        gap_next = torch.cat([s[:, :-1] - s[:, 1:], torch.full_like(s[:, :1], torch.inf)], 1)
        near_tie = torch.minimum(gap_prev.abs(), gap_next.abs()) < tol
        assert near_tie[differ].all(), f"rankings differ outside ties at {torch.nonzero(differ)[:5]}"
        for r in torch.nonzero(differ.any(1)).flatten():
            assert sorted(items_a[r][finite[r]].tolist()) == sorted(items_b[r][finite[r]].tolist())
