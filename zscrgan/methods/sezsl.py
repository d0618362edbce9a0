"""SE-ZSL (Kumar Verma, Arora, Mishra, Rai, CVPR 2018, "Generalized Zero-Shot Learning via Synthesized
Examples"): a conditional VAE whose decoder generates image features from a class description, with a
regressor that maps features back to the description and feeds its error back into the generator.

There is no released code. The losses follow the paper's model (docs/methods/sezsl.md says which parts
and which values are the paper's and which are ours):
- encoder E(x) = (mu, log sigma^2) of q(z | x); generator G(z, a) -> x; regressor R(x) -> a, where the
  class description a is here a text vector of the image's class;
- VAE: |G(z, a) - x|^2 with z ~ q(z | x), plus KL(q(z | x) || N(0, I));
- regressor: |R(x) - a|^2 on real features plus lambda_R |R(x_hat) - a|^2 on generated ones, x_hat = G(z, a), z ~ N(0, I);
- generator feedback: lambda_c |R(x_hat) - a|^2 (the generated example must carry its description) and
  lambda_z of -log q(z | x_hat) (the encoder must recover the z that made it, so z is not ignored).
Each step updates the regressor, then encoder and generator. Queries are G(z, text) averaged over
`eval_draws` draws of z; the gallery is the raw image vectors (the project's rule for generative methods).
"""

from __future__ import annotations

import tensorflow as tf

from zscrgan.data.draw import PackedClasses
from zscrgan.methods.base import Method, Phases, TrainingData, apply_after, mean_over_draws, run_steps
from zscrgan.networks import Dense, leaky
from zscrgan.optimizers import AdamTF1

LOSS_NAMES = ("reconstruction", "kl", "regressor", "feedback", "z_recovery")


class MLP(tf.Module):
    """x -> hidden (leaky ReLU) -> out (linear)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, rng: tf.random.Generator, name: str):
        super().__init__(name=name)
        self.fc1 = Dense(n_in, hidden, rng, "fc1")
        self.fc2 = Dense(hidden, n_out, rng, "fc2")

    def __call__(self, x):
        return self.fc2(leaky(self.fc1(x)))


def squared_error(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Mean over rows of the summed squared difference (the negative log-likelihood of a unit-variance
    Gaussian, less its constant)."""
    return tf.reduce_mean(tf.reduce_sum(tf.square(a - b), axis=1))


def gaussian_kl(mu: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """Mean over rows of KL(N(mu, exp(log_var)) || N(0, I))."""
    return tf.reduce_mean(0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(mu) - 1.0 - log_var, axis=1))


def gaussian_nll(z: tf.Tensor, mu: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """Mean over rows of -log N(z; mu, exp(log_var)), less its constant."""
    return tf.reduce_mean(0.5 * tf.reduce_sum(log_var + tf.square(z - mu) / tf.exp(log_var), axis=1))


class SEZSL(Method):
    """Keys: the `sezsl.*` section of configs/methods/sezsl.yaml."""

    loss_names = LOSS_NAMES
    architecture_keys = ("sezsl.hidden_dim", "sezsl.z_dim")

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(cfg, image_dim, text_dim, name="sezsl")
        own = cfg.sezsl
        self.batch_size, self.steps_per_round = int(own.batch_size), int(own.steps_per_round)
        self.z_dim, hidden = int(own.z_dim), int(own.hidden_dim)
        self.lambda_r, self.lambda_c, self.lambda_z = float(own.lambda_r), float(own.lambda_c), float(own.lambda_z)
        self.rng = tf.random.Generator.from_seed(int(cfg.seed))  # weights, batches and training noise
        self.noise = tf.random.Generator.from_seed([int(cfg.seed), 1])  # the queries' noise
        self.encoder = MLP(image_dim, hidden, 2 * self.z_dim, self.rng, "encoder")
        self.generator = MLP(self.z_dim + text_dim, hidden, image_dim, self.rng, "generator")
        self.regressor = MLP(image_dim, hidden, text_dim, self.rng, "regressor")
        self.vae_weights = list(self.encoder.trainable_variables) + list(self.generator.trainable_variables)  # that order
        self.regressor_weights = list(self.regressor.trainable_variables)
        lr, beta1 = float(own.learning_rate), float(own.beta1)
        self.vae_optimizer = AdamTF1(self.vae_weights, lr, beta1=beta1, name="vae_adam")
        self.regressor_optimizer = AdamTF1(self.regressor_weights, lr, beta1=beta1, name="regressor_adam")
        self.packed = None
        self._chunk = tf.function(self._steps, jit_compile=bool(cfg.jit_compile))

    def encode(self, x):
        """(mu, log variance) of q(z | x)."""
        return tf.split(self.encoder(x), 2, axis=1)

    def decode(self, z, a):
        return self.generator(tf.concat([z, a], axis=1))

    # --- training ----------------------------------------------------------------------------------
    def attach(self, data: TrainingData) -> None:
        self.packed = PackedClasses(data)

    def losses(self, x, a, eps, z_prior):
        """The five losses on a batch (x [B, I], a [B, T] a text of x's class), with the noise given:
        eps [B, z] reparameterises z ~ q(z | x), z_prior [B, z] ~ N(0, I) makes x_hat = G(z_prior, a).
        Returns (the VAE loss, the generator's feedback terms, the regressor's loss, the five named losses)."""
        mu, log_var = self.encode(x)
        z = mu + tf.exp(0.5 * log_var) * eps
        reconstruction = squared_error(self.decode(z, a), x)
        kl = gaussian_kl(mu, log_var)
        x_hat = self.decode(z_prior, a)
        regressor = squared_error(self.regressor(x), a) + self.lambda_r * squared_error(
            self.regressor(tf.stop_gradient(x_hat)), a)
        feedback = squared_error(self.regressor(x_hat), a)
        mu_hat, log_var_hat = self.encode(x_hat)
        z_recovery = gaussian_nll(z_prior, mu_hat, log_var_hat)
        judged = self.lambda_c * feedback + self.lambda_z * z_recovery
        return reconstruction + kl, judged, regressor, tf.stack([reconstruction, kl, regressor, feedback, z_recovery])

    def gradients(self, x, a, eps, z_prior):
        """(regressor gradients, encoder + generator gradients, the five losses) of one batch. The
        feedback and z-recovery terms train the generator only: R and E are their fixed judges."""
        encoder, generator = self.encoder.trainable_variables, self.generator.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            vae, judged, regressor, named = self.losses(x, a, eps, z_prior)
            generator_loss = vae + judged
        regressor_grads = tape.gradient(regressor, self.regressor_weights)
        vae_grads = tape.gradient(vae, encoder) + tape.gradient(generator_loss, generator)
        del tape
        return regressor_grads, vae_grads, named

    def update(self, x, a, eps, z_prior):
        """One step: the regressor and the encoder + generator, each by its Adam, from the same forward
        pass. Returns the five losses before the step."""
        regressor_grads, vae_grads, named = self.gradients(x, a, eps, z_prior)
        apply_after(named, (self.regressor_optimizer, regressor_grads), (self.vae_optimizer, vae_grads))
        return named

    def _step(self):
        packed = self.packed
        rows = packed.image_rows(self.rng, self.batch_size)
        x = tf.gather(packed.images, rows)
        a = packed.text_of(self.rng, tf.gather(packed.image_labels, rows))
        eps = self.rng.normal([self.batch_size, self.z_dim])
        z_prior = self.rng.normal([self.batch_size, self.z_dim])
        return self.update(x, a, eps, z_prior)

    def _steps(self, n):
        total = tf.zeros([len(LOSS_NAMES)])
        for _ in tf.range(n):
            total += self._step()
        return total

    def train_round(self, phases: Phases) -> dict | None:
        out = phases.run("VAE", self.steps_per_round,
                         lambda stop: run_steps(self._chunk, self.steps_per_round, len(LOSS_NAMES), stop))
        return None if out is None else dict(zip(LOSS_NAMES, map(float, out.numpy())))

    # --- retrieval ---------------------------------------------------------------------------------
    def reset_noise(self, seed: int) -> None:
        self.noise.reset_from_seed([int(seed), 1])

    def _generate_once(self, texts):
        texts = tf.convert_to_tensor(texts)
        return self.decode(self.noise.normal([tf.shape(texts)[0], self.z_dim]), texts)

    def generate(self, texts, draws: int = 1):
        return mean_over_draws(self._generate_once, texts, draws)

    def embed_queries(self, texts, draws=None):
        return self.generate(texts, draws or self.eval_draws)

    def embed_gallery(self, images):
        return tf.convert_to_tensor(images)
