"""Why the generator recommends an item (docs/protocol.md §6): its semantic-ID path with a readable
name per code, the model's probability at each level, the history items that share its level-1 /
level-2 prefix, and the trunk's attention over the history.

Per-level probabilities come from the model's distribution over the catalogue p(item | history)
(history items excluded when the model excludes them): the probability of a prefix is the mass of
the items under it, so p(c_l | c_<l) = P(c_<=l) / P(c_<l), and the levels multiply to p(item)
exactly (the last level, the disambiguation code, leaves one item). For the parallel generator
p(item) is the softmax of its item scores; RQ-style IDs read level by level, OPQ IDs codebook by
codebook in their stored order.

Code names: for every level-1 code and level-1/2 prefix, the most common catalogue value (category,
genre or brand) among the items under it, leaving out values half the catalogue carries (e.g.
"Beauty"); computed from the catalogue once and stored as code_names.json beside the
semantic IDs (rqvae.artifact.code_names; rqvae.pipeline writes them, older artifacts get them
computed on the fly).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.core.errors import RecError

@dataclass(frozen=True)
class Explanation:
    """One recommended item. codes: its semantic ID; level_probs: p(code_l | earlier codes,
    history), multiplying to probability = p(item | history); names: the level-1 code's and the
    level-1/2 prefix's names; shares_level1 / shares_level2: history item ids (source ids) with the
    same level-1 code / level-1/2 prefix."""

    item: int
    codes: list
    probability: float
    level_probs: list
    names: list
    shares_level1: list
    shares_level2: list


def item_probabilities(model, history: np.ndarray) -> torch.Tensor:
    """p(item | history) over items 0..N (0 and, when the model excludes them, history items get 0)."""
    from onerec.parallel_generator import ParallelSidGenerator
    if not isinstance(model, ParallelSidGenerator):
        raise RecError(f"--explain needs a generator that scores every item (make_generator.kind = "
                       f"'parallel'); this run's generator is {type(model).__name__}")
    items = torch.from_numpy(np.asarray(history, dtype=np.int64))[None]
    with torch.no_grad():
        scores = model.item_scores(model.encode(items)[:, -1])[0].double()
    if model.exclude_history:
        scores[items[0]] = -torch.inf
    return torch.softmax(scores, 0)


def explain(model, codes: np.ndarray, names: dict, raw_ids: np.ndarray, history: np.ndarray,
            items: list[int]) -> list[Explanation]:
    """Explanations of `items` for `history` (item ids), codes (N+1, L+1) of the model's artifact."""
    p = item_probabilities(model, history).numpy()
    hist = np.asarray(history, dtype=np.int64)
    out = []
    for i in items:
        path = codes[i]
        under = np.ones(len(codes), dtype=bool)
        mass, probs = 1.0, []
        for level in range(codes.shape[1]):
            under &= codes[:, level] == path[level]
            now = float(p[under].sum())
            probs.append(now / mass if mass > 0 else 0.0)
            mass = now
        key1, key2 = str(path[0]), "-".join(map(str, path[:2]))
        same1 = hist[codes[hist, 0] == path[0]]
        same2 = same1[(codes[same1, :2] == path[:2]).all(1)] if codes.shape[1] > 1 else same1[:0]
        out.append(Explanation(int(i), [int(c) for c in path], float(p[i]), probs,
                               [names.get("1", {}).get(key1, ""), names.get("2", {}).get(key2, "")],
                               [str(raw_ids[j]) for j in dict.fromkeys(same1.tolist())],
                               [str(raw_ids[j]) for j in dict.fromkeys(same2.tolist())]))
    return out


def history_attention(model, history: np.ndarray) -> np.ndarray:
    """(layers, T) the last position's attention over the last T history items, mean over heads."""
    items = torch.from_numpy(np.asarray(history, dtype=np.int64))[None]
    maps: list = []
    with torch.no_grad():
        model.encode(items, attention=maps)
    return np.stack([m[0, :, -1].mean(0).numpy() for m in maps])


def plot_attention(path: Path, weights: np.ndarray, labels: list[str]) -> None:
    """One bar chart per layer: attention of the last position over the history items."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retrieval.core.io import atomic_write
    layers, T = weights.shape
    fig, axes = plt.subplots(layers, 1, figsize=(max(6, 0.45 * T + 2), 2.2 * layers + 1.5),
                             squeeze=False, sharex=True)
    for layer, ax in enumerate(axes[:, 0]):
        ax.bar(np.arange(T), weights[layer], color="#4c72b0")
        ax.set_ylabel(f"layer {layer + 1}")
        ax.set_ylim(0, max(1e-6, float(weights.max())) * 1.1)
    axes[-1, 0].set_xticks(np.arange(T), [s[:28] for s in labels[-T:]], rotation=60, ha="right",
                           fontsize=7)
    fig.suptitle("attention of the next-item state over the history (mean over heads)")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
