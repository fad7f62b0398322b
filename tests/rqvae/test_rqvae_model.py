"""The residual quantizer (rotation trick, losses, dead-code reset) and the RQ-VAE tokenizer."""
import numpy as np
import pytest
import torch

from retrieval.core.errors import RecError
from rqvae.quantizer import ResidualQuantizer, rotate_to
from rqvae.rqvae_model import RQVAE, RQVAETokenizer


def test_rotation_trick_returns_the_target_and_rotates_the_gradient():
    src = torch.tensor([[3.0, 0.0]], requires_grad=True)
    tgt = torch.tensor([[0.0, 2.0]])
    out = rotate_to(src, tgt)
    torch.testing.assert_close(out.detach(), tgt)
    # out = (|tgt|/|src|) R src with R the 90-degree rotation: d out_y / d src_x = 2/3
    out[0, 1].backward()
    torch.testing.assert_close(src.grad, torch.tensor([[2 / 3, 0.0]]))


def test_straight_through_copies_the_gradient_unchanged():
    q = ResidualQuantizer(levels=1, codebook_size=2, dim=2, gradient="straight_through")
    with torch.no_grad():
        q.codebooks[0] = torch.tensor([[0.0, 2.0], [5.0, 5.0]])
    z = torch.tensor([[3.0, 0.0]], requires_grad=True)
    out = q(z)
    torch.testing.assert_close(out.quantized.detach(), torch.tensor([[0.0, 2.0]]))
    out.quantized[0, 1].backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.0, 1.0]]))


def test_quantizer_codes_and_loss_by_hand():
    q = ResidualQuantizer(levels=2, codebook_size=2, dim=1, beta=0.25)
    with torch.no_grad():
        q.codebooks[0] = torch.tensor([[0.0], [4.0]])
        q.codebooks[1] = torch.tensor([[-1.0], [0.5]])
    z = torch.tensor([[3.0], [0.2]])
    out = q(z)
    assert out.codes.tolist() == [[1, 0], [0, 1]]
    # level 1 residuals -1, 0.2 -> level 2 picks -1 (exact) and 0.5 (error 0.3)
    torch.testing.assert_close(out.quantized.detach(), torch.tensor([[3.0], [0.5]]))
    l1 = (1.0 ** 2 + 0.2 ** 2) / 2
    l2 = (0.0 + 0.3 ** 2) / 2
    assert out.loss.item() == pytest.approx(1.25 * (l1 + l2), rel=1e-5)
    torch.testing.assert_close(out.residuals[:, 1], torch.tensor([[-1.0], [0.2]]))  # level-2 inputs


def test_dead_codes_are_reseeded_from_current_residuals():
    q = ResidualQuantizer(levels=2, codebook_size=3, dim=2)
    counts = torch.tensor([[5, 0, 0], [1, 1, 1]])
    residuals = torch.arange(24, dtype=torch.float32).reshape(6, 2, 2)
    n = q.reset_dead_codes(counts, residuals, torch.Generator().manual_seed(0))
    assert n == 2
    level0 = {tuple(r) for r in residuals[:, 0].tolist()}
    new = [tuple(v) for v in q.codebooks[0, 1:].tolist()]
    assert set(new) <= level0 and new[0] != new[1]
    assert q.codebooks[0, 0].tolist() == [0.0, 0.0] and q.codebooks[1].abs().sum() == 0


def test_unknown_gradient_mode_is_a_one_line_error():
    with pytest.raises(RecError, match="gradient = 'ste' is unknown; choose one of: straight_through, rotation"):
        RQVAE(8, gradient="ste")


def test_encoder_widths_adapt_to_the_input():
    m = RQVAE(384, hidden_dims=(512, 256, 128), latent_dim=32, levels=3, codebook_size=16)
    widths = [(l.in_features, l.out_features) for l in m.encoder if isinstance(l, torch.nn.Linear)]
    assert widths == [(384, 512), (512, 256), (256, 128), (128, 32)]
    out = m(torch.randn(4, 384))
    assert out.recon.shape == (4, 384) and out.codes.shape == (4, 3)


def _topics(n_per=16, topics=32, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim))
    labels = np.repeat(np.arange(topics), n_per)
    x = centres[labels] + 0.3 * rng.standard_normal((len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def _small_tokenizer(**kw):
    args = dict(levels=3, codebook_size=16, seed=0, hidden_dims=(64, 32), latent_dim=8,
                steps=150, batch_size=128, kmeans_init_size=256, reset_every=25, log_every=25)
    args.update(kw)
    return RQVAETokenizer(**args)


@pytest.mark.parametrize("gradient", ["rotation", "straight_through"])
def test_rqvae_trains_uses_its_codebooks_and_groups_topics(gradient):
    x, labels = _topics()
    tok = _small_tokenizer(gradient=gradient)
    codes = tok.fit(x)
    assert codes.shape == (512, 3) and codes.min() >= 0 and codes.max() < 16
    assert tok.history[-1]["recon_loss"] < tok.history[0]["recon_loss"]
    assert all(len(np.unique(codes[:, l])) >= 12 for l in range(3))       # >= 75% of codes used
    same = labels[:, None] == labels[None, :]
    share = codes[:, None, 0] == codes[None, :, 0]
    assert share[same].mean() > 4 * share[~same].mean()
    assert tok.reconstruction.shape == x.shape


def test_rqvae_same_seed_gives_identical_codes_and_weights():
    x, _ = _topics(n_per=8)
    a, b = _small_tokenizer(steps=40), _small_tokenizer(steps=40)
    assert np.array_equal(a.fit(x), b.fit(x))
    wa, wb = a.weights(), b.weights()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = _small_tokenizer(steps=40, seed=1)
    assert not np.array_equal(c.fit(x), a.encode(torch.from_numpy(x)))


def test_rqvae_refuses_nan_embeddings():
    x, _ = _topics(n_per=8)
    x[3, 0] = np.inf
    with pytest.raises(RecError, match=r"NaN or inf \(first rows \[3\]"):
        _small_tokenizer().fit(x)
