"""An independent float64 numpy ZSCRGAN for the step tests: forward passes, hand-written backward passes
and TF1 updates, written from spec/algorithm.md ("Networks", "Losses for one batch", "Optimisers").

Weights are a dict name -> array, named like the model's variables (`encoder.fc.kernel`, ...). Nothing
here calls TensorFlow or an autodiff library; every gradient is the chain rule written out.
"""

from __future__ import annotations

import numpy as np

LEAK = 0.2
MARGIN = 2.0


def leaky(x):
    return np.where(x > 0, x, LEAK * x)


def leaky_grad(pre, dy):
    return dy * np.where(pre > 0, 1.0, LEAK)


def softplus(x):
    return np.log1p(np.exp(x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def model_variables(model) -> dict:
    """The TensorFlow model's variables keyed by network attribute, layer and kind (`critic.fc1.kernel`)."""
    out = {}
    for net in ("encoder", "generator", "critic", "csem"):
        module = getattr(model, net)
        for layer in ("fc", "fc1", "fc2", "fc3"):
            if hasattr(module, layer):
                dense = getattr(module, layer)
                out[f"{net}.{layer}.kernel"], out[f"{net}.{layer}.bias"] = dense.kernel, dense.bias
    return out


def model_weights(model) -> dict:
    """The model's weights as float64 arrays, keyed as in `model_variables`."""
    return {k: v.numpy().astype(np.float64) for k, v in model_variables(model).items()}


class Dense:
    """y = x W + b, remembering x for the backward pass."""

    def __init__(self, w, name):
        self.kernel, self.bias, self.name = w[f"{name}.kernel"], w[f"{name}.bias"], name

    def forward(self, x):
        self.x = x
        return x @ self.kernel + self.bias

    def backward(self, dy, grads):
        """Add dL/dW, dL/db to `grads`; return dL/dx."""
        grads[f"{self.name}.kernel"] = grads.get(f"{self.name}.kernel", 0.0) + self.x.T @ dy
        grads[f"{self.name}.bias"] = grads.get(f"{self.name}.bias", 0.0) + dy.sum(axis=0)
        return dy @ self.kernel.T


def encoder_forward(w, phi, eps):
    """c = mu + exp(s) eps with [mu, s] = leaky(phi W + b). Returns (c, mu, s, cache)."""
    fc = Dense(w, "encoder.fc")
    pre = fc.forward(phi)
    h = leaky(pre)
    e = h.shape[1] // 2
    mu, s = h[:, :e], h[:, e:]
    return mu + np.exp(s) * eps, mu, s, (fc, pre, s, eps)


def encoder_backward(cache, dc, dmu, ds, grads):
    fc, pre, s, eps = cache
    dmu = dmu + dc
    ds = ds + dc * np.exp(s) * eps
    fc.backward(leaky_grad(pre, np.concatenate([dmu, ds], axis=1)), grads)


def generator_forward(w, c, z):
    """relu(fc3(leaky(fc2(leaky(fc1([c, z])))))). Returns (g, cache)."""
    layers = [Dense(w, f"generator.fc{k}") for k in (1, 2, 3)]
    a1 = layers[0].forward(np.concatenate([c, z], axis=1))
    a2 = layers[1].forward(leaky(a1))
    a3 = layers[2].forward(leaky(a2))
    return np.maximum(a3, 0.0), (layers, a1, a2, a3, c.shape[1])


def generator_backward(cache, dg, grads):
    """Returns dL/dc."""
    layers, a1, a2, a3, e = cache
    dh2 = layers[2].backward(dg * (a3 > 0), grads)
    dh1 = layers[1].backward(leaky_grad(a2, dh2), grads)
    du = layers[0].backward(leaky_grad(a1, dh1), grads)
    return du[:, :e]


def critic_forward(w, x, phi):
    """fc2(leaky(fc1([x, phi]))) as a vector of scores. Returns (scores, cache)."""
    fc1, fc2 = Dense(w, "critic.fc1"), Dense(w, "critic.fc2")
    pre = fc1.forward(np.concatenate([x, phi], axis=1))
    return fc2.forward(leaky(pre))[:, 0], (fc1, fc2, pre, x.shape[1])


def critic_backward(cache, dscore, grads):
    """Returns dL/dx (the image input)."""
    fc1, fc2, pre, image_dim = cache
    dh = fc2.backward(dscore[:, None], grads)
    return fc1.backward(leaky_grad(pre, dh), grads)[:, :image_dim]


def csem_forward(w, x):
    fc = Dense(w, "csem.fc")
    pre = fc.forward(x)
    return leaky(pre), (fc, pre)


def csem_backward(cache, dtheta, grads):
    fc, pre = cache
    return fc.backward(leaky_grad(pre, dtheta), grads)


def cosine(a, b):
    """Row-wise cosine, and its gradients with respect to a and b (per unit of upstream gradient)."""
    na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    ua, ub = a / na, b / nb
    cos = np.sum(ua * ub, axis=1, keepdims=True)
    return cos[:, 0], (ub - cos * ua) / na, (ua - cos * ub) / nb


def gaussian_kl(a, b):
    """mean(-b + 0.5 (-1 + exp(2b) + a^2)) and its gradients with respect to a and b."""
    n = a.size
    return np.mean(-b + 0.5 * (-1.0 + np.exp(2.0 * b) + a ** 2)), a / n, (np.exp(2.0 * b) - 1.0) / n


def divergence(mu, s):
    """The released term 0.5 (KL(mu, m) + KL(s, m)), m = (mu + s) / 2, and its gradients."""
    m = (mu + s) / 2.0
    k1, d1a, d1m = gaussian_kl(mu, m)
    k2, d2a, d2m = gaussian_kl(s, m)
    dm = 0.5 * (d1m + d2m)
    return 0.5 * (k1 + k2), 0.5 * d1a + 0.5 * dm, 0.5 * d2a + 0.5 * dm


def csem_triplet(theta_r, theta_w, anchor):
    """Released L_C = softplus(mean cos(theta_w, c) - mean cos(theta_r, c)) and its gradients on theta_r,
    theta_w and the anchor c. theta_w None: without the wrong half, softplus(-mean cos(theta_r, c))."""
    n = theta_r.shape[0]
    cos_r, dr_theta, dr_anchor = cosine(theta_r, anchor)
    if theta_w is None:
        cos_w, dw_theta, dw_anchor = np.zeros(n), np.zeros((0, theta_r.shape[1])), 0.0
    else:
        cos_w, dw_theta, dw_anchor = cosine(theta_w, anchor)
    delta = cos_w.mean() - cos_r.mean()
    k = sigmoid(delta) / n
    return softplus(delta), -k * dr_theta, k * dw_theta, k * (dw_anchor - dr_anchor)


def visual_pivot(g_r, pivots):
    """mean over rows with a nonzero pivot of 1 - cos(g_r, pivot), and its gradient on g_r."""
    real = np.any(pivots != 0.0, axis=1)
    n_real = max(real.sum(), 1)
    cos = np.zeros(len(g_r))
    dg = np.zeros_like(g_r)
    cos[real], dcos, _ = cosine(g_r[real], pivots[real])
    dg[real] = -dcos / n_real
    return float(np.sum(1.0 - cos[real]) / n_real), dg


def generator_side(w, phi_r, phi_w, x_r, x_w, eps, z, *, mm_reg_coeff=2.0, kl_div_coefficient=1.0,
                   triplet_coeff=1.0, adv_coeff=1.0, wrong_branch=True, pivots=None, pivot_coeff=0.0):
    """Released L_G for one batch and its gradients on the text encoder and generator (`grads`) and,
    for joint training, L_C's gradients on the CSEM (`csem_grads`).

    eps, z: [2n, .]; the first n rows are the correct half's noise, the last n the wrong half's.
    wrong_branch=False: no wrong half: R = mean ||g_r - x_r||_1, L_C = softplus(-mean cos(theta_r, c_r)),
    the divergence of the correct half alone, and only the first n noise rows are used.
    pivots [n, I]: each row's class mean image (zeros: a padded row), adding pivot_coeff * `visual_pivot`.
    Returns ([L_G, R, L_C, divergence], grads, csem_grads).
    """
    n = phi_r.shape[0]
    rows = 2 * n if wrong_branch else n
    phi = np.concatenate([phi_r, phi_w]) if wrong_branch else phi_r
    c, mu, s, enc = encoder_forward(w, phi, eps[:rows])
    g, gen = generator_forward(w, c, z[:rows])
    g_r = g[:n]
    d_fake, crit = critic_forward(w, g_r, phi_r)
    theta, csem = csem_forward(w, g)
    l_c, dtheta_r, dtheta_w, danchor = csem_triplet(theta[:n], theta[n:] if wrong_branch else None, c[:n])
    r = np.abs(g_r - x_r).sum(axis=1).mean()
    dr = np.sign(g_r - x_r) / n
    if wrong_branch:
        r += MARGIN - np.abs(g_r - x_w).sum(axis=1).mean()
        dr -= np.sign(g_r - x_w) / n
    div_r, dmu_r, ds_r = divergence(mu[:n], s[:n])
    div, dmu, ds = div_r, dmu_r, ds_r
    if wrong_branch:
        div_w, dmu_w, ds_w = divergence(mu[n:], s[n:])
        div, dmu, ds = (div_r + div_w) / 2.0, np.concatenate([dmu_r, dmu_w]) / 2, np.concatenate([ds_r, ds_w]) / 2
    loss = -adv_coeff * d_fake.mean() + triplet_coeff * l_c + mm_reg_coeff * r + kl_div_coefficient * div
    pivot, dpivot = visual_pivot(g_r, pivots) if pivots is not None else (0.0, 0.0)
    loss += pivot_coeff * pivot

    # L_C's own gradients on the CSEM (what joint training applies) and the critic's, never applied here.
    csem_grads, critic_grads = {}, {}
    dg = triplet_coeff * csem_backward(csem, np.concatenate([dtheta_r, dtheta_w]), csem_grads)
    dg[:n] += critic_backward(crit, np.full(n, -adv_coeff / n), critic_grads)
    dg[:n] += mm_reg_coeff * dr + pivot_coeff * dpivot
    grads = {}
    dc = generator_backward(gen, dg, grads)
    dc[:n] += triplet_coeff * danchor
    encoder_backward(enc, dc, kl_div_coefficient * dmu, kl_div_coefficient * ds, grads)
    return np.array([loss, r, l_c, div]), grads, csem_grads


def csem_side(w, phi_r, phi_w, eps, z, wrong_branch=True, x_r=None, x_w=None):
    """Released L_C of the M-step and its gradients on the CSEM (eps, z, wrong_branch as in `generator_side`).

    x_r (and x_w with the wrong branch) given: plus L_C of the real images, CSEM(x_r) and CSEM(x_w) against
    the same anchor c_r (`csem_real_images`)."""
    n = phi_r.shape[0]
    rows = 2 * n if wrong_branch else n
    c, _, _, _ = encoder_forward(w, np.concatenate([phi_r, phi_w]) if wrong_branch else phi_r, eps[:rows])
    g, _ = generator_forward(w, c, z[:rows])
    theta, csem = csem_forward(w, g)
    l_c, dtheta_r, dtheta_w, _ = csem_triplet(theta[:n], theta[n:] if wrong_branch else None, c[:n])
    grads = {}
    csem_backward(csem, np.concatenate([dtheta_r, dtheta_w]), grads)
    if x_r is not None:
        theta, csem = csem_forward(w, np.concatenate([x_r, x_w]) if wrong_branch else x_r)
        l_real, dtheta_r, dtheta_w, _ = csem_triplet(theta[:n], theta[n:] if wrong_branch else None, c[:n])
        csem_backward(csem, np.concatenate([dtheta_r, dtheta_w]), grads)
        l_c += l_real
    return l_c, grads


def critic_side(w, g_r, x_r, x_w, phi_r, wrong_branch=True):
    """Released L_D = (mean D(g_r) + mean D(x_w)) / 2 - mean D(x_r), all against phi_r, and its gradients.

    wrong_branch=False: mean D(g_r) - mean D(x_r).
    """
    n = phi_r.shape[0]
    grads, loss = {}, 0.0
    terms = ((g_r, 0.5), (x_w, 0.5), (x_r, -1.0)) if wrong_branch else ((g_r, 1.0), (x_r, -1.0))
    for x, weight in terms:
        scores, cache = critic_forward(w, x, phi_r)
        loss += weight * scores.mean()
        critic_backward(cache, np.full(n, weight / n), grads)
    return loss, grads


def rmsprop_tf1(w, g, lr, ms=1.0, rho=0.9, epsilon=1e-10):
    """One TF1 RMSProp step from accumulator `ms`: epsilon inside the square root."""
    ms = rho * ms + (1.0 - rho) * g ** 2
    return w - lr * g / np.sqrt(ms + epsilon)


def adam_tf1_first_step(w, g, lr, beta1=0.5, beta2=0.999, epsilon=1e-8):
    """TF1 Adam's first step from zero moments."""
    m, v = (1.0 - beta1) * g, (1.0 - beta2) * g ** 2
    return w - lr * np.sqrt(1.0 - beta2) / (1.0 - beta1) * m / (np.sqrt(v) + epsilon)
