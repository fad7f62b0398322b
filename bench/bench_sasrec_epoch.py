"""One SASRec training epoch (BCE, one negative, the seed's defaults: hidden 50, 2 blocks, 1 head,
maxlen 200, dropout 0.2, batch 128) on Beauty and ml-latest-small, in samples/s.

Rows:
  ours                 retrieval.scorers.trainer's train_epoch (vectorised batches, length
                       bucketing, leading all-padding columns dropped, vectorised negatives)
  ours, no bucketing   the same with plain random batches (bucket_batches = 0)
  reference-style      a re-implementation of the reference's per-epoch work (pmixer/SASRec.pytorch):
                       ceil(U/128) batches of users drawn at random, every batch padded to maxlen,
                       negatives drawn per position in a Python loop, nn.MultiheadAttention,
                       Conv1d feed-forward, BCE on non-padding positions. Its sampling time is
                       shown separately, because the reference runs it in 3 worker processes that
                       overlap with training; "model only" is the reference's best case.

This is not the reference code itself; the issue's ≤ 0.5× target is about the real reference, timed
on the same machine. Samples = training sequences (users); positions = non-padding predictions.

    python bench/bench_sasrec_epoch.py
    python bench/bench_sasrec_epoch.py --datasets amazon-beauty --no-reference --threads 2
"""
from __future__ import annotations

import argparse
import random
import resource
import time

import numpy as np
import torch
from torch import nn

from retrieval.data import load_split
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers import SequentialScorer
from retrieval.negatives.base import UniformNegativeSampler
from retrieval.scorers.trainer import ScorerTask, ScorerTrainer


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------- reference-style epoch
class RefFeedForward(nn.Module):
    def __init__(self, d, p):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(d, d, 1), nn.Conv1d(d, d, 1)
        self.d1, self.d2 = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x):
        y = self.d2(self.c2(torch.relu(self.d1(self.c1(x.transpose(-1, -2)))))).transpose(-1, -2)
        return y + x


class RefSASRec(nn.Module):
    def __init__(self, n_items, d=50, blocks=2, heads=1, p=0.2, maxlen=200):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen + 1, d, padding_idx=0)
        self.drop = nn.Dropout(p)
        self.attn_ln = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.attn = nn.ModuleList(nn.MultiheadAttention(d, heads, p) for _ in range(blocks))
        self.fwd_ln = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.fwd = nn.ModuleList(RefFeedForward(d, p) for _ in range(blocks))
        self.last_ln = nn.LayerNorm(d, eps=1e-8)

    def forward(self, seq, pos, neg):
        s = torch.as_tensor(seq)
        x = self.item_emb(s) * self.item_emb.embedding_dim ** 0.5
        L = s.shape[1]
        x = self.drop(x + self.pos_emb(torch.arange(1, L + 1)[None] * (s != 0)))
        keep = (s != 0)[..., None]
        x = x * keep
        mask = ~torch.tril(torch.ones(L, L, dtype=torch.bool))
        for i in range(len(self.attn)):
            x = x.transpose(0, 1)
            q = self.attn_ln[i](x)
            out, _ = self.attn[i](q, x, x, attn_mask=mask)
            x = (q + out).transpose(0, 1)
            x = self.fwd[i](self.fwd_ln[i](x)) * keep
        h = self.last_ln(x)
        return ((h * self.item_emb(torch.as_tensor(pos))).sum(-1),
                (h * self.item_emb(torch.as_tensor(neg))).sum(-1))


def ref_batch(user_train, users, n_items, maxlen, bs):
    """The reference sampler's work for one batch, in Python, one position at a time."""
    seq = np.zeros((bs, maxlen), dtype=np.int64)
    pos, neg = np.zeros_like(seq), np.zeros_like(seq)
    for b in range(bs):
        u = users[random.randrange(len(users))]
        items = user_train[u]
        ts, nxt, idx = set(items), items[-1], maxlen - 1
        for i in reversed(items[:-1]):
            seq[b, idx], pos[b, idx] = i, nxt
            t = random.randint(1, n_items)
            while t in ts:
                t = random.randint(1, n_items)
            neg[b, idx] = t
            nxt, idx = i, idx - 1
            if idx == -1:
                break
    return seq, pos, neg


def reference_epoch(split, maxlen, bs):
    user_train = [split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]].tolist()
                  for u in range(split.num_users)]
    users = [u for u in range(split.num_users) if len(user_train[u]) > 1]
    torch.manual_seed(0)
    random.seed(0)
    model = RefSASRec(split.num_items, maxlen=maxlen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    bce = nn.BCEWithLogitsLoss()
    sample_s = model_s = 0.0
    positions = 0
    for _ in range((split.num_users - 1) // bs + 1):
        t0 = time.perf_counter()
        seq, pos, neg = ref_batch(user_train, users, split.num_items, maxlen, bs)
        t1 = time.perf_counter()
        pl, nl = model(seq, pos, neg)
        idx = np.where(pos != 0)
        loss = bce(pl[idx], torch.ones_like(pl[idx])) + bce(nl[idx], torch.zeros_like(nl[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sample_s += t1 - t0
        model_s += time.perf_counter() - t1
        positions += len(idx[0])
    return sample_s, model_s, positions, (split.num_users - 1) // bs * bs + bs


# ----------------------------------------------------------------- ours
def our_epoch(split, maxlen, bs, bucket_batches):
    torch.manual_seed(0)
    model = SequentialScorer(num_items=split.num_items, maxlen=maxlen, hidden=50, num_blocks=2,
                             num_heads=1, dropout=0.2)
    trainer = ScorerTrainer(batch_size=bs, progress=False, bucket_batches=bucket_batches, device="cpu")
    task = ScorerTask(trainer, model, split, ScorerLoss("bce", num_negatives=1),
                      UniformNegativeSampler(split, seed=0), None)
    batches = task.epoch_batches(0, np.random.default_rng(0))
    task.on_epoch_start(0)
    out = trainer.train_batches(task, batches)
    return {"loss": out["loss"], "positions": out["targets"], "sequences": len(task.data)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["amazon-beauty", "ml-latest-small"])
    p.add_argument("--maxlen", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest on a shared box)")
    p.add_argument("--no-reference", dest="reference", action="store_false")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"SASRec BCE epoch, hidden 50, 2 blocks, 1 head, maxlen {args.maxlen}, batch "
          f"{args.batch_size}, dropout 0.2; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    head = f"{'dataset':<16}{'implementation':<34}{'epoch s':>9}{'cpu s':>8}{'samples/s':>11}{'positions/s':>13}"
    print(head)
    rows = []
    for name in args.datasets:
        split = load_split(name)
        for label, bucket in (("ours", 64), ("ours, no bucketing", 0)):
            c0, t0 = cpu_seconds(), time.perf_counter()
            out = our_epoch(split, args.maxlen, args.batch_size, bucket)
            sec, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            rows.append((name, label, sec, cpu, out["sequences"] / sec, out["positions"] / sec))
            print(f"{name:<16}{label:<34}{sec:>9.2f}{cpu:>8.2f}{rows[-1][4]:>11.0f}{rows[-1][5]:>13.0f}",
                  flush=True)
        if args.reference:
            c0, t0 = cpu_seconds(), time.perf_counter()
            sample_s, model_s, positions, samples = reference_epoch(split, args.maxlen, args.batch_size)
            sec, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            for label, s in (("reference-style, model only", model_s),
                             ("reference-style, + serial sampling", sec)):
                print(f"{name:<16}{label:<34}{s:>9.2f}{cpu if '+' in label else float('nan'):>8.2f}"
                      f"{samples / s:>11.0f}{positions / s:>13.0f}", flush=True)
            ours = rows[-2][2]
            print(f"{name:<16}ours / reference-style model only = {ours / model_s:.2f}x "
                  f"(sampling alone took {sample_s:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
