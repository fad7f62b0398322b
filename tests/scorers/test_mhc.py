"""mHC residuals: doubly stochastic H_res, correct gradients, trainable mappings, and use_mhc=False
being exactly the plain residual network."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.data.batch import HistoryBatch
from retrieval.scorers import SequentialScorer
from retrieval.scorers.mhc import HyperConnection, PlainResidual, _sinkhorn_iterate, sinkhorn_knopp


def test_h_res_is_doubly_stochastic_for_any_input():
    torch.manual_seed(0)
    hc = HyperConnection(dim=8, streams=4)
    with torch.no_grad():                       # make the input-dependent term large, not just init
        hc.res_gate.fill_(3.0)
        hc.proj.weight.normal_(0, 1.0)
    x = torch.randn(3, 5, 4, 8) * 4
    h_pre, h_post, h_res = hc.mappings(x)
    assert h_res.shape == (3, 5, 4, 4)
    assert (h_res >= 0).all()
    assert torch.allclose(h_res.sum(-1), torch.ones(3, 5, 4), atol=1e-3)   # rows
    assert torch.allclose(h_res.sum(-2), torch.ones(3, 5, 4), atol=1e-3)   # columns
    assert ((h_pre > 0) & (h_pre < 1)).all() and ((h_post > 0) & (h_post < 2)).all()
    assert h_res.std(dim=(0, 1)).max() > 1e-3                             # really input-dependent


def test_sinkhorn_gradient_matches_autograd_through_unrolled_iterations():
    torch.manual_seed(1)
    logits = (torch.randn(6, 4, 4) * 1.5).double()
    upstream = torch.randn(6, 4, 4).double()
    a = logits.clone().requires_grad_()
    (sinkhorn_knopp(a, 20, tol=1e-7, max_iters=500) * upstream).sum().backward()
    b = logits.clone().requires_grad_()
    (_sinkhorn_iterate(b, 500) * upstream).sum().backward()          # plain autograd, unrolled
    assert torch.allclose(a.grad.double(), b.grad, atol=1e-5)


def test_static_mappings_start_at_the_plain_residual_point():
    n = 4
    hc = HyperConnection(dim=8, streams=n)
    assert torch.allclose(torch.sigmoid(hc.pre_bias), torch.full((n,), 1 / n))
    assert torch.allclose(2 * torch.sigmoid(hc.post_bias), torch.ones(n))


def _tiny(use_mhc, use_time=False, pre_ln=True, **kw):
    torch.manual_seed(0)
    return SequentialScorer(num_items=30, maxlen=10, hidden=16, num_blocks=2, num_heads=2, dropout=0.0,
                            use_time=use_time, use_mhc=use_mhc, pre_ln=pre_ln, **kw)


def _batch():
    g = torch.Generator().manual_seed(3)
    items = torch.randint(1, 31, (4, 10), generator=g)
    items[0, :6] = 0
    items[1, :2] = 0
    times = torch.cumsum(torch.randint(0, 100, (4, 10), generator=g), 1) * (items > 0)
    return HistoryBatch(torch.arange(4), items, times)


def _manual_plain_forward(m: SequentialScorer, items: torch.Tensor) -> torch.Tensor:
    """SASRec written out with tensor algebra from the model's weights (no module calls)."""
    B, L = items.shape
    d, H = m.hidden, m.config["num_heads"]
    valid = items > 0
    pos = (torch.arange(L) + 1 + m.maxlen - L) * valid
    x = m.item_emb.weight[items] * math.sqrt(d) + m.pos_emb.weight[pos]
    x = x * valid[..., None]
    allowed = torch.ones(L, L).tril().bool() & (valid[:, None, :] | torch.eye(L, dtype=torch.bool))
    ln = lambda t, mod: F.layer_norm(t, (d,), mod.weight, mod.bias, mod.eps)  # noqa: E731
    for blk in m.blocks:
        h = ln(x, blk.attn_norm) if m.config["pre_ln"] else x
        q, k, v = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).split(d, dim=-1)
        heads = lambda t: t.view(B, L, H, d // H).transpose(1, 2)  # noqa: E731
        s = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d // H)
        s = s.masked_fill(~allowed[:, None], float("-inf"))
        o = (s.softmax(-1) @ heads(v)).transpose(1, 2).reshape(B, L, d)
        x = x + o @ blk.attn.out.weight.T + blk.attn.out.bias
        if not m.config["pre_ln"]:
            x = ln(x, blk.attn_norm)
        h = ln(x, blk.ffn_norm) if m.config["pre_ln"] else x
        f = torch.relu(h @ blk.ffn.fc1.weight.T + blk.ffn.fc1.bias) @ blk.ffn.fc2.weight.T + blk.ffn.fc2.bias
        x = x + f
        if not m.config["pre_ln"]:
            x = ln(x, blk.ffn_norm)
        x = x * valid[..., None]
    return F.layer_norm(x, (d,), m.last_norm.weight, m.last_norm.bias, m.last_norm.eps)


def test_use_mhc_false_is_exactly_the_plain_residual_network():
    for pre_ln in (True, False):
        m = _tiny(use_mhc=False, pre_ln=pre_ln).eval()
        assert not any(isinstance(x, HyperConnection) for x in m.modules())
        assert all(isinstance(b.attn_residual, PlainResidual) for b in m.blocks)
        b = _batch()
        with torch.no_grad():
            got = m.encode(b.items)
            want = _manual_plain_forward(m, b.items)
        valid = b.items > 0
        assert torch.allclose(got[valid], want[valid], atol=1e-5), pre_ln


def test_mhc_pinned_at_the_residual_point_reproduces_the_plain_network():
    """With the input-dependent gates at 0, H_pre = 1/n, H_post = 1 and H_res uniform, identical
    streams stay identical, so the mHC model must equal the plain model with the same weights."""
    plain = _tiny(use_mhc=False).eval()
    mhc = _tiny(use_mhc=True).eval()
    missing, unexpected = mhc.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".attn_residual." in k or ".ffn_residual." in k for k in missing)
    with torch.no_grad():
        for hc in (x for x in mhc.modules() if isinstance(x, HyperConnection)):
            hc.pre_gate.zero_(), hc.post_gate.zero_(), hc.res_gate.zero_(), hc.res_bias.zero_()
    b = _batch()
    with torch.no_grad():
        assert torch.allclose(mhc.score_all(b), plain.score_all(b), atol=1e-4)


def test_mhc_parameters_get_gradients_and_move_during_training():
    m = _tiny(use_mhc=True, use_time=True)
    m.train()
    names = [n for n, _ in m.named_parameters() if "_residual." in n]
    assert len(names) == 2 * 2 * 7          # 2 blocks × 2 sublayers × (3 biases, proj, 3 gates)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    b = _batch()
    for step in range(5):
        scores = m.score_all(b)
        loss = F.cross_entropy(scores[:, 1:], (b.items[:, -1] % 30))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for n, p in m.named_parameters():
                if n in names:
                    assert p.grad is not None and p.grad.abs().sum() > 0, n
        opt.step()
    after = dict(m.named_parameters())
    for n in names:
        assert not torch.equal(before[n], after[n].detach()), f"{n} did not move"
    hc = m.blocks[0].attn_residual
    with torch.no_grad():
        _, _, h_res = hc.mappings(torch.randn(2, 3, 4, 16))
    assert np.allclose(h_res.sum(-1).numpy(), 1, atol=1e-3) and np.allclose(h_res.sum(-2).numpy(), 1, atol=1e-3)
