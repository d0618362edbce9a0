"""ZSCRGAN's losses for one batch, as pure functions of tensors.

Each function computes the released formula; where the released formula is not the textbook one, a
keyword selects the textbook alternative (off by default) and the docstring says what differs. Where a
function takes the wrong-class half, None for it gives the loss without the wrong-class branch
(`wrong_branch: false`, the slides' ablation); the docstring says what that leaves.
"""

from __future__ import annotations

import tensorflow as tf

MARGIN = 2.0  # the released R adds a constant margin of 2.0


def critic_loss(d_fake: tf.Tensor, d_wrong: tf.Tensor | None, d_real: tf.Tensor) -> tf.Tensor:
    """L_D = (mean D(g_r, phi_r) + mean D(x_w, phi_r)) / 2 - mean D(x_r, phi_r), minimised by the critic.

    d_wrong None: mean D(g_r, phi_r) - mean D(x_r, phi_r), the plain conditional WGAN critic loss.
    """
    if d_wrong is None:
        return tf.reduce_mean(d_fake) - tf.reduce_mean(d_real)
    return (tf.reduce_mean(d_fake) + tf.reduce_mean(d_wrong)) / 2.0 - tf.reduce_mean(d_real)


def max_margin(g_r: tf.Tensor, x_r: tf.Tensor, x_w: tf.Tensor | None, hinge: bool = False) -> tf.Tensor:
    """R, the "max-margin" regulariser on L1 distances (summed over features).

    Released (hinge=False): mean_b ||g_r - x_r||_1 - mean_b ||g_r - x_w||_1 + 2, which can go negative.
    hinge=True: mean_b max(0, ||g_r - x_r||_1 - ||g_r - x_w||_1 + 2), the textbook margin loss.
    x_w None: mean_b ||g_r - x_r||_1, an L1 pull towards the real image (no margin is left to keep).
    """
    d_pos = tf.reduce_sum(tf.abs(g_r - x_r), axis=1)
    if x_w is None:
        return tf.reduce_mean(d_pos)
    d_neg = tf.reduce_sum(tf.abs(g_r - x_w), axis=1)
    if hinge:
        return tf.reduce_mean(tf.nn.relu(d_pos - d_neg + MARGIN))
    return tf.reduce_mean(d_pos) - tf.reduce_mean(d_neg) + MARGIN


def cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row-wise cosine similarity."""
    return tf.reduce_sum(tf.nn.l2_normalize(a, axis=1) * tf.nn.l2_normalize(b, axis=1), axis=1)


def csem_loss(theta_r: tf.Tensor, theta_w: tf.Tensor | None, anchor: tf.Tensor,
              per_sample: bool = False) -> tf.Tensor:
    """L_C, a soft-margin triplet with the sampled condition c_r as anchor.

    Released (per_sample=False): log(1 + exp(mean_b cos(theta_w, c_r) - mean_b cos(theta_r, c_r))),
    the margin taken on batch means. per_sample=True: mean_b log(1 + exp(cos_w - cos_r)).
    theta_w None: the negative's cosine is dropped (cos_w = 0): log(1 + exp(-mean_b cos_r)), or
    mean_b log(1 + exp(-cos_r)) per sample; only the pull towards the anchor is left.
    """
    cos_r = cosine(theta_r, anchor)
    cos_w = tf.zeros_like(cos_r) if theta_w is None else cosine(theta_w, anchor)
    if per_sample:
        return tf.reduce_mean(tf.nn.softplus(cos_w - cos_r))
    return tf.nn.softplus(tf.reduce_mean(cos_w) - tf.reduce_mean(cos_r))


def visual_pivot(g_r: tf.Tensor, pivots: tf.Tensor) -> tf.Tensor:
    """The visual pivot (`pivot_coeff`): mean over real rows of 1 - cos(g_r, the row's class mean image).

    A cosine, as retrieval ranks by cosine, so its weight does not depend on the features' scale. A row
    whose pivot is all zeros (a padded row) is left out; with none left the loss is 0.
    """
    real = tf.cast(tf.reduce_any(tf.not_equal(pivots, 0.0), axis=1), g_r.dtype)
    return tf.reduce_sum(real * (1.0 - cosine(g_r, pivots))) / tf.maximum(tf.reduce_sum(real), 1.0)


def gaussian_kl(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Elementwise mean of -b + 0.5 (-1 + exp(2b) + a^2): KL(N(a, exp(b)^2) || N(0, 1)) per unit."""
    return tf.reduce_mean(-b + 0.5 * (-1.0 + tf.exp(2.0 * b) + tf.square(a)))


def divergence(mu: tf.Tensor, s: tf.Tensor, textbook: bool = False) -> tf.Tensor:
    """The text encoder's divergence term (s is log sigma).

    Released (textbook=False): with m = (mu + s) / 2, 0.5 * (KL(mu, m) + KL(s, m)) where KL is
    `gaussian_kl`; it is not the KL of the conditioning distribution. textbook=True: KL(mu, s), i.e.
    KL(N(mu, sigma^2) || N(0, 1)) averaged over units, as in StackGAN's conditioning augmentation.
    """
    if textbook:
        return gaussian_kl(mu, s)
    m = (mu + s) / 2.0
    return 0.5 * (gaussian_kl(mu, m) + gaussian_kl(s, m))


def mean_divergence(div_r: tf.Tensor, div_w: tf.Tensor | None) -> tf.Tensor:
    """(div_r + div_w) / 2, the divergence term of L_G; div_r alone when div_w is None."""
    return div_r if div_w is None else (div_r + div_w) / 2.0


def generator_loss(d_fake: tf.Tensor, l_c: tf.Tensor, r: tf.Tensor, div_r: tf.Tensor, div_w: tf.Tensor | None,
                   *, mm_reg_coeff: float, kl_div_coefficient: float, triplet_coeff: float = 1.0,
                   adv_coeff: float = 1.0, pivot: tf.Tensor | None = None, pivot_coeff: float = 0.0) -> tf.Tensor:
    """L_G = -adv * mean D(g_r) + triplet * L_C + mm_reg_coeff * R + kl_div_coefficient * (div_r + div_w) / 2
    [+ pivot_coeff * pivot].

    Released: adv_coeff = triplet_coeff = 1; they exist for the paper's ablations. div_w None: the
    divergence term is kl_div_coefficient * div_r. pivot (`visual_pivot`) None: no pivot term (released).
    """
    div = kl_div_coefficient * div_r if div_w is None else kl_div_coefficient * (div_r + div_w) / 2.0
    loss = -adv_coeff * tf.reduce_mean(d_fake) + triplet_coeff * l_c + mm_reg_coeff * r + div
    return loss if pivot is None else loss + pivot_coeff * pivot
