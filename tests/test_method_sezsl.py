"""SE-ZSL: its five losses against NumPy, its gradients (who trains on what) against finite differences
of the NumPy losses, and the method inside the harness (run, resume, retrieval)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.method_runs import main_run, records, resume_repeats_uninterrupted, retrieval_of_trained_run
from zscrgan.config import load_config
from zscrgan.methods.sezsl import SEZSL


def tiny_method(spread=None):
    """A tiny SE-ZSL; `spread`: weights redrawn N(0, spread^2), so that every loss and gradient is O(1)."""
    cfg = load_config("DEMO", overrides={"method": "sezsl", "sezsl": {"hidden_dim": 5, "z_dim": 3, "lambda_r": 0.3,
                                                                     "lambda_c": 0.7, "lambda_z": 0.4}})
    m = SEZSL(cfg, image_dim=6, text_dim=4)
    if spread:
        r = np.random.default_rng(5)
        for v in m.trainable_variables:
            v.assign(r.normal(scale=spread, size=v.shape).astype(np.float32))
    return m


def mlp(params, x):
    w1, b1, w2, b2 = params
    h = x @ w1 + b1
    return np.where(h > 0, h, 0.2 * h) @ w2 + b2


def params_of(net):
    return [v.numpy().astype(np.float64) for v in (net.fc1.kernel, net.fc1.bias, net.fc2.kernel, net.fc2.bias)]


def numpy_losses(enc, gen, reg, x, a, eps, zp, lam=(0.3, 0.7, 0.4)):
    """(reconstruction, kl, regressor, feedback, z_recovery) by the formulas of docs/methods/sezsl.md."""
    lam_r, _, _ = lam
    mu, log_var = np.split(mlp(enc, x), 2, axis=1)
    z = mu + np.exp(0.5 * log_var) * eps
    rec = np.mean(np.sum((mlp(gen, np.concatenate([z, a], 1)) - x) ** 2, 1))
    kl = np.mean(0.5 * np.sum(np.exp(log_var) + mu ** 2 - 1 - log_var, 1))
    x_hat = mlp(gen, np.concatenate([zp, a], 1))
    feedback = np.mean(np.sum((mlp(reg, x_hat) - a) ** 2, 1))
    regressor = np.mean(np.sum((mlp(reg, x) - a) ** 2, 1)) + lam_r * feedback
    mu_h, lv_h = np.split(mlp(enc, x_hat), 2, axis=1)
    z_rec = np.mean(0.5 * np.sum(lv_h + (zp - mu_h) ** 2 / np.exp(lv_h), 1))
    return np.array([rec, kl, regressor, feedback, z_rec])


def batch(seed=0):
    r = np.random.default_rng(seed)
    return [r.normal(size=s).astype(np.float32) for s in ((4, 6), (4, 4), (4, 3), (4, 3))]


def test_losses_equal_numpy():
    m = tiny_method(spread=0.5)
    x, a, eps, zp = batch()
    _, _, _, named = m.losses(*map(tf.constant, (x, a, eps, zp)))
    want = numpy_losses(params_of(m.encoder), params_of(m.generator), params_of(m.regressor), x, a, eps, zp)
    np.testing.assert_allclose(named.numpy(), want, rtol=1e-5)
    assert want.min() > 0.1


def finite_difference(fn, params, index, entry, h=1e-5):
    up = [p.copy() for p in params]
    down = [p.copy() for p in params]
    up[index][entry] += h
    down[index][entry] -= h
    return (fn(up) - fn(down)) / (2 * h)


def test_gradients_train_each_network_on_its_own_terms():
    """The regressor on its loss; the encoder on the VAE loss alone; the generator also on the
    feedback and z-recovery terms: each checked against central differences of the NumPy losses."""
    m = tiny_method(spread=0.5)
    x, a, eps, zp = (v.astype(np.float64) for v in batch(1))
    reg_grads, vae_grads, _ = m.gradients(*map(tf.constant, batch(1)))
    enc, gen, reg = params_of(m.encoder), params_of(m.generator), params_of(m.regressor)
    lam_c, lam_z = 0.7, 0.4

    def loss(e, g, r):
        return numpy_losses(e, g, r, x, a, eps, zp)

    checks = [
        (reg_grads, lambda p: loss(enc, gen, p)[2], reg),
        (vae_grads[:4], lambda p: loss(p, gen, reg)[0] + loss(p, gen, reg)[1], enc),
        (vae_grads[4:], lambda p: float(np.dot(loss(enc, p, reg), [1, 1, 0, lam_c, lam_z])), gen),
    ]
    r = np.random.default_rng(2)
    for grads, fn, params in checks:
        # tf.Module lists variables by name: fc1/bias, fc1/kernel, fc2/bias, fc2/kernel.
        order = [1, 0, 3, 2]
        for k, g in enumerate(grads):
            p_index = order[k]
            for _ in range(3):
                entry = tuple(r.integers(0, n) for n in params[p_index].shape)
                want = finite_difference(fn, params, p_index, entry)
                assert g.numpy()[entry] == pytest.approx(want, rel=2e-3, abs=1e-4)
    # The encoder's gradient leaves out z-recovery: with it, it would differ.
    with_z = lambda p: float(np.dot(loss(p, gen, reg), [1, 1, 0, 0, lam_z]))
    differs = [abs(finite_difference(with_z, enc, 0, (i, j)) - vae_grads[1].numpy()[i, j]) for i in range(6) for j in range(5)]
    assert max(differs) > 0.05


def test_generated_queries_average_draws_and_repeat_after_a_noise_reset():
    m = tiny_method()
    texts = tf.constant(batch()[1])
    m.reset_noise(3)
    singles = [m.generate(texts).numpy() for _ in range(3)]
    m.reset_noise(3)
    np.testing.assert_allclose(m.embed_queries(texts, 3).numpy(), np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(singles[0], singles[1])
    assert np.array_equal(m.embed_gallery(np.ones((2, 6), np.float32)).numpy(), np.ones((2, 6)))


OWN = {"steps_per_round": 30, "batch_size": 16, "hidden_dim": 16, "z_dim": 4, "learning_rate": 0.003}


def test_registered_run_writes_losses_and_retrievals(tmp_path):
    rc, out = main_run(tmp_path, "sezsl", OWN)
    assert rc == 0
    recs = records(out)
    assert [r["round"] for r in recs] == [1, 2]
    assert set(recs[0]["losses"]) == {"reconstruction", "kl", "regressor", "feedback", "z_recovery"}
    assert recs[1]["losses"]["reconstruction"] < recs[0]["losses"]["reconstruction"]
    assert list((tmp_path / "res" / "DEMO_res").glob("acc*.pkl"))
    prec, summary = retrieval_of_trained_run(out, tmp_path)
    assert 0.0 <= prec <= 1.0 and abs(prec - summary["test_at_selected_round"]["prec"]) < 0.15


def test_resume_after_round_one_repeats_the_uninterrupted_run(tmp_path):
    resume_repeats_uninterrupted(tmp_path, "sezsl", OWN)
