"""Each loss equals a float64 numpy computation written from spec/algorithm.md ("Losses for one batch")."""

import numpy as np
import pytest
import tensorflow as tf

from zscrgan import losses

RTOL = 1e-5
B, I, E = 6, 10, 5


def _f32(rng, *shape, scale=1.0):
    """Random float32 values (what the code sees) and the same values in float64 (what numpy uses)."""
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    return x, x.astype(np.float64)


def _np_kl(a, b):
    """Spec: elementwise mean over batch and units of -b + 0.5 * (-1 + exp(2b) + a^2)."""
    return np.mean(-b + 0.5 * (-1.0 + np.exp(2.0 * b) + a ** 2))


def _np_cos(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _np_softplus(x):
    return np.log1p(np.exp(x))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_critic_loss(rng):
    (d_fake, d_fake64), (d_wrong, d_wrong64), (d_real, d_real64) = (_f32(rng, B, 1) for _ in range(3))
    expected = (d_fake64.mean() + d_wrong64.mean()) / 2.0 - d_real64.mean()
    got = losses.critic_loss(tf.constant(d_fake), tf.constant(d_wrong), tf.constant(d_real))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)


def _np_r_released(g, xr, xw):
    return np.abs(g - xr).sum(axis=1).mean() - np.abs(g - xw).sum(axis=1).mean() + 2.0


def _np_r_hinge(g, xr, xw):
    return np.maximum(0.0, np.abs(g - xr).sum(axis=1) - np.abs(g - xw).sum(axis=1) + 2.0).mean()


def test_max_margin_released_and_hinge_on_random_inputs(rng):
    (g, g64), (xr, xr64), (xw, xw64) = (_f32(rng, B, I) for _ in range(3))
    np.testing.assert_allclose(float(losses.max_margin(g, xr, xw)), _np_r_released(g64, xr64, xw64), rtol=RTOL)
    np.testing.assert_allclose(float(losses.max_margin(g, xr, xw, hinge=True)), _np_r_hinge(g64, xr64, xw64),
                               rtol=RTOL)


def test_max_margin_released_goes_negative_while_hinge_stays_non_negative(rng):
    # g_r very close to x_r and far from x_w: ||g-x_r|| - ||g-x_w|| + 2 << 0 for every row.
    xr, xr64 = _f32(rng, B, I)
    g = (xr + 0.01 * rng.standard_normal((B, I))).astype(np.float32)
    xw = (xr + 3.0).astype(np.float32)
    released = float(losses.max_margin(g, xr, xw))
    hinged = float(losses.max_margin(g, xr, xw, hinge=True))
    expected = _np_r_released(g.astype(np.float64), xr64, xw.astype(np.float64))
    assert expected < -20.0
    np.testing.assert_allclose(released, expected, rtol=RTOL)
    assert hinged == 0.0


def test_max_margin_hinge_is_per_sample_not_on_the_batch_mean():
    # Row 0: d_pos - d_neg = -10 (margin satisfied); row 1: +1 (violated). Batch-mean hinge would give
    # max(0, (-10 + 1)/2 + 2) = 0; the per-sample hinge gives (0 + 3) / 2 = 1.5; released gives -2.5.
    xr = np.zeros((2, 1), np.float32)
    g = np.array([[0.0], [1.0]], np.float32)
    xw = np.array([[10.0], [1.0]], np.float32)
    assert float(losses.max_margin(g, xr, xw, hinge=True)) == pytest.approx(1.5, rel=RTOL)
    assert float(losses.max_margin(g, xr, xw)) == pytest.approx(-2.5, rel=RTOL)


def test_csem_loss_batch_mean_and_per_sample(rng):
    (tr, tr64), (tw, tw64), (c, c64) = (_f32(rng, B, E) for _ in range(3))
    cos_r, cos_w = _np_cos(tr64, c64), _np_cos(tw64, c64)
    batch_mean = _np_softplus(cos_w.mean() - cos_r.mean())
    per_sample = _np_softplus(cos_w - cos_r).mean()
    np.testing.assert_allclose(float(losses.csem_loss(tr, tw, c)), batch_mean, rtol=RTOL)
    np.testing.assert_allclose(float(losses.csem_loss(tr, tw, c, per_sample=True)), per_sample, rtol=RTOL)
    # softplus is convex, so by Jensen the per-sample form is >= the released one; here strictly.
    assert per_sample > batch_mean + 1e-4


def test_csem_loss_is_scale_invariant_in_each_argument(rng):
    (tr, _), (tw, _), (c, _) = (_f32(rng, B, E) for _ in range(3))
    base = float(losses.csem_loss(tr, tw, c))
    scaled = float(losses.csem_loss(3.0 * tr, 0.5 * tw, 7.0 * c))
    assert scaled == pytest.approx(base, rel=RTOL)


def test_gaussian_kl(rng):
    (a, a64), (b, b64) = _f32(rng, B, E), _f32(rng, B, E, scale=0.5)
    np.testing.assert_allclose(float(losses.gaussian_kl(a, b)), _np_kl(a64, b64), rtol=RTOL)


def test_divergence_released_and_textbook(rng):
    (mu, mu64), (s, s64) = _f32(rng, B, E), _f32(rng, B, E, scale=0.5)
    m = (mu64 + s64) / 2.0
    released = 0.5 * (_np_kl(mu64, m) + _np_kl(s64, m))
    # Textbook KL(N(mu, sigma^2) || N(0, 1)) with sigma = exp(s), per unit: 0.5(mu^2 + sigma^2 - 1) - s.
    textbook = np.mean(0.5 * (mu64 ** 2 + np.exp(2.0 * s64) - 1.0) - s64)
    np.testing.assert_allclose(float(losses.divergence(mu, s)), released, rtol=RTOL)
    np.testing.assert_allclose(float(losses.divergence(mu, s, textbook=True)), textbook, rtol=RTOL)


def test_released_divergence_is_not_the_textbook_kl():
    # mu = 1, s = 0 (sigma = 1): the textbook KL is 0.5 * 1^2 = 0.5 per unit.
    # Released: m = 0.5; KL(1, 0.5) = -0.5 + 0.5 e;  KL(0, 0.5) = -0.5 + 0.5 (e - 1);  half their sum.
    mu, s = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    textbook = float(losses.divergence(mu, s, textbook=True))
    released = float(losses.divergence(mu, s))
    assert textbook == pytest.approx(0.5, rel=RTOL)
    assert released == pytest.approx(0.5 * ((-0.5 + 0.5 * np.e) + (-0.5 + 0.5 * (np.e - 1.0))), rel=RTOL)
    assert abs(released - textbook) > 0.1


def test_generator_loss_with_coefficients(rng):
    d_fake, d_fake64 = _f32(rng, B, 1)
    l_c, r, div_r, div_w = 0.7, -1.3, 0.4, 0.9
    for mm, kl, trip, adv in [(2.0, 1.0, 1.0, 1.0), (0.5, 3.0, 0.0, 2.0), (0.0, 0.0, 1.0, 0.0)]:
        expected = -adv * d_fake64.mean() + trip * l_c + mm * r + kl * (div_r + div_w) / 2.0
        got = losses.generator_loss(tf.constant(d_fake), tf.constant(l_c), tf.constant(r), tf.constant(div_r),
                                    tf.constant(div_w), mm_reg_coeff=mm, kl_div_coefficient=kl,
                                    triplet_coeff=trip, adv_coeff=adv)
        np.testing.assert_allclose(float(got), expected, rtol=RTOL, atol=1e-6)


def test_generator_loss_defaults_are_the_released_weights(rng):
    d_fake, d_fake64 = _f32(rng, B, 1)
    got = losses.generator_loss(tf.constant(d_fake), 0.7, -1.3, 0.4, 0.9, mm_reg_coeff=2.0, kl_div_coefficient=1.0)
    expected = -d_fake64.mean() + 0.7 + 2.0 * -1.3 + 1.0 * (0.4 + 0.9) / 2.0
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)


# --- without the wrong-class branch (`wrong_branch: false`): the wrong half is None ---------------------
def test_losses_without_the_wrong_half(rng):
    (d_fake, d_fake64), (d_real, d_real64) = _f32(rng, B, 1), _f32(rng, B, 1)
    np.testing.assert_allclose(float(losses.critic_loss(d_fake, None, d_real)), d_fake64.mean() - d_real64.mean(),
                               rtol=RTOL)
    (g, g64), (xr, xr64) = _f32(rng, B, I), _f32(rng, B, I)
    l1 = np.abs(g64 - xr64).sum(axis=1).mean()  # no margin and no negative term: never below zero
    np.testing.assert_allclose(float(losses.max_margin(g, xr, None)), l1, rtol=RTOL)
    np.testing.assert_allclose(float(losses.max_margin(g, xr, None, hinge=True)), l1, rtol=RTOL)
    (tr, tr64), (c, c64) = _f32(rng, B, E), _f32(rng, B, E)
    cos_r = _np_cos(tr64, c64)
    np.testing.assert_allclose(float(losses.csem_loss(tr, None, c)), _np_softplus(-cos_r.mean()), rtol=RTOL)
    np.testing.assert_allclose(float(losses.csem_loss(tr, None, c, per_sample=True)), _np_softplus(-cos_r).mean(),
                               rtol=RTOL)
    got = losses.generator_loss(tf.constant(d_fake), 0.7, 1.3, 0.4, None, mm_reg_coeff=2.0, kl_div_coefficient=3.0)
    np.testing.assert_allclose(float(got), -d_fake64.mean() + 0.7 + 2.0 * 1.3 + 3.0 * 0.4, rtol=RTOL)
    assert float(losses.mean_divergence(tf.constant(0.4), None)) == pytest.approx(0.4)
    assert float(losses.mean_divergence(tf.constant(0.4), tf.constant(0.9))) == pytest.approx(0.65)
