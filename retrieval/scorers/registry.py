"""Which scorer architecture a scorer run trains (gin: `make_scorer.kind`).

Every kind answers the same calls, so ScorerTrainer, the losses, the samplers and the evaluator never
learn its name: `encode(items, times)` -> (B, L', d) states, `score_all(batch)` -> (B, N+1),
`item_emb` (the output item table), `similarity`, `maxlen`, `use_time`, `variant`, `config`,
`num_parameters()`; optionally `training_sequences(split)` when the model is not trained on the next
item at every position (BERT4Rec's masked items).
"""
from __future__ import annotations

import gin

from retrieval.core.errors import RecError
from retrieval.scorers.bert4rec import BERT4Rec
from retrieval.scorers.gru4rec import GRU4Rec
from retrieval.scorers.sasrec import SequentialScorer

# 'sasrec' is the SASRec / TiSASRec (± mHC) family; SequentialScorer's switches pick the variant.
SCORERS = {"sasrec": SequentialScorer, "gru4rec": GRU4Rec, "bert4rec": BERT4Rec}


@gin.configurable
def make_scorer(num_items: int, kind: str = "sasrec"):
    """The scorer of architecture `kind`, its other arguments bound in gin under its class name."""
    if kind not in SCORERS:
        raise RecError(f"make_scorer.kind = {kind!r} is unknown; use one of {', '.join(SCORERS)}")
    return SCORERS[kind](num_items=num_items)
