"""A built-in synthetic dataset: no files, no network, with the structure real data has.

Items belong to topics (genres, named in plain words: "jazz music", "astronomy", ...) and get
titles that name their topic plus words of a topic vocabulary, so text embeddings carry signal. Popularity is Zipfian within each topic. Each user has 1-3 interest topics; a next
item is, with probability `p_sequential`, the successor of the current item in its topic's chain
(sequential structure a sequence model can learn and popularity cannot), otherwise a popular item
of one of the user's topics. Timestamps grow by exponential gaps.

A user consumes an item at most once (later repeats are dropped, see the end of `generate`).
Generation is vectorised across users (one loop over sequence positions), so ML-25M sizes work.
"""
from __future__ import annotations

import numpy as np

_SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sel", "dun", "pra", "zo", "qui", "mar",
              "bel", "cor", "fen", "gal", "hor", "jin", "lux", "nor", "pel", "ros", "tas", "vir"]
# Topic names in plain words, so a text encoder sees what a topic is about (as it does on real
# catalogues) and semantic IDs can carry the topic structure the interactions follow.
_TOPICS = ["jazz music", "horror films", "gardening", "astronomy", "italian cooking", "chess",
           "football", "poetry", "photography", "knitting", "robotics", "wine tasting",
           "mountain hiking", "ancient history", "yoga", "sailing", "comic books", "birdwatching",
           "pottery", "computer security", "opera", "skateboarding", "beekeeping", "origami"]
_GENERIC = ["the", "of", "new", "classic", "deluxe", "mini", "big", "little", "edition", "ii",
            "return", "collection", "original", "best", "pure", "night", "day", "gold", "blue"]


def _topic_words(num_topics: int, words_per_topic: int, rng: np.random.Generator) -> list[list[str]]:
    s = np.array(_SYLLABLES)
    out = []
    for _ in range(num_topics):
        a = rng.choice(s, size=(words_per_topic, 2))
        out.append(["".join(p) for p in a])
    return out


def generate(num_users: int = 2000, num_items: int = 1000, mean_length: float = 20.0,
             num_topics: int = 20, zipf_exponent: float = 1.0, p_sequential: float = 0.5,
             min_length: int = 5, max_length: int = 500, seed: int = 0,
             unique_per_user: bool = True) -> dict:
    """Return a dict of arrays: user, item, timestamp (events, grouped by user, time-ordered),
    and item metadata: title, genres (both (num_items,) str, item k has raw id k+1), topic.
    unique_per_user: drop a user's repeated items (False keeps exact sequence lengths, for
    benchmarks that need an exact number of rows).
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, num_topics, size=num_items)
    topic[:num_topics] = np.arange(num_topics)[: min(num_topics, num_items)]  # no empty topic
    topic_names = [_TOPICS[t] if num_topics <= len(_TOPICS) else f"genre{t:02d}"
                   for t in range(num_topics)]

    # Titles: two topic words + one generic word, plus a running number to keep them distinct.
    vocab = _topic_words(num_topics, 12, rng)
    w1 = rng.integers(0, 12, size=num_items)
    w2 = rng.integers(0, 12, size=num_items)
    g = rng.integers(0, len(_GENERIC), size=num_items)
    titles = np.array([f"{topic_names[t].title()}: {vocab[t][a].title()} {_GENERIC[c]} {vocab[t][b]} {i + 1}"
                       for i, (t, a, b, c) in enumerate(zip(topic, w1, w2, g))], dtype=object)
    second = rng.integers(0, num_topics, size=num_items)
    has_second = rng.random(num_items) < 0.3
    genres = np.array([topic_names[t] + (f"|{topic_names[s]}" if h and s != t else "")
                       for t, s, h in zip(topic, second, has_second)], dtype=object)

    # Items grouped by topic; within a topic, Zipf weights over a random rank, and a random chain.
    by_topic = np.lexsort((rng.random(num_items), topic))          # item indices, grouped by topic
    t_sorted = topic[by_topic]
    t_start = np.searchsorted(t_sorted, np.arange(num_topics))
    t_count = np.bincount(topic, minlength=num_topics)
    rank = np.arange(num_items) - t_start[t_sorted]                 # rank within its topic
    w = 1.0 / (rank + 1.0) ** zipf_exponent
    w_sum = np.bincount(t_sorted, weights=w, minlength=num_topics)
    cdf = t_sorted + np.cumsum(w) - np.repeat(np.cumsum(w_sum) - w_sum, t_count)  # in [t, t+1]
    cdf = cdf / 1.0
    successor = np.empty(num_items, dtype=np.int64)                 # chain: next item in topic order
    chain_pos = rng.permutation(num_items)                          # shuffle chain order per topic
    chain = np.lexsort((chain_pos, topic))
    nxt = np.roll(chain, -1)
    last_of_topic = np.r_[t_sorted[1:] != t_sorted[:-1], True]      # wrap around within the topic
    first_of_topic = np.r_[True, t_sorted[1:] != t_sorted[:-1]]
    nxt[last_of_topic] = chain[first_of_topic]
    successor[chain] = nxt

    def popular_in(topics: np.ndarray) -> np.ndarray:
        u = rng.random(len(topics)) * (1 - 1e-9)
        pos = np.searchsorted(cdf, topics + u, side="right")
        pos = np.minimum(pos, t_start[topics] + t_count[topics] - 1)
        return by_topic[pos]

    # Users: lengths, interests (1-3 topics).
    lengths = np.clip(rng.geometric(1.0 / max(1.0, mean_length - min_length + 1), size=num_users)
                      + min_length - 1, min_length, max_length)
    n_int = rng.integers(1, 4, size=num_users)
    interests = rng.integers(0, num_topics, size=(num_users, 3))
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.empty(offsets[-1], dtype=np.int64)
    times = np.empty(offsets[-1], dtype=np.int64)
    current = popular_in(interests[np.arange(num_users), rng.integers(0, n_int)])
    clock = rng.integers(946_684_800, 1_500_000_000, size=num_users)   # 2000..2017
    for step in range(int(lengths.max())):
        active = np.nonzero(lengths > step)[0]
        if step > 0:
            a = len(active)
            topics = interests[active, rng.integers(0, n_int[active])]
            jump = popular_in(topics)
            follow = rng.random(a) < p_sequential
            current[active] = np.where(follow, successor[current[active]], jump)
            clock[active] += rng.exponential(86_400.0, size=a).astype(np.int64) + 1
        items[offsets[active] + step] = current[active]
        times[offsets[active] + step] = clock[active]
    user = np.repeat(np.arange(num_users), lengths)
    # Each user consumes an item once (as in the Amazon and MovieLens data): later repeats are
    # dropped. With repeats, a test target can be an item of the user's own history, which the
    # full-ranking protocol (history excluded, the target kept) lets a scorer rank but a
    # generator that excludes its history never returns: a protocol artefact, not a skill.
    if unique_per_user:
        _, first = np.unique(user.astype(np.int64) * num_items + items, return_index=True)
        keep = np.sort(first)
        user, items, times = user[keep], items[keep], times[keep]
    return {"user": user, "item": items + 1, "timestamp": times,
            "title": titles, "genres": genres, "topic": topic}
