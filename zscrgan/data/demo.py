"""A synthetic dataset in the released format, so the project runs without any download.

Each class c has a hidden latent vector u_c. Both modalities are views of it:
- a text vector is a fixed random linear map of u_c plus noise (like LDA topics or sentence
  embeddings, which are roughly linear in what a class is about);
- an image vector is a fixed random two-layer network of (u_c + item variation) followed by a
  ReLU, plus noise: non-negative and sparse like pooled CNN features, and non-linear in u_c.
Because the maps are shared by all classes, a text-to-image model fitted on seen classes carries
over to unseen ones; because of the noise, the item variation and the non-linearity, it does
not carry over perfectly.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zscrgan.atomic import clear_stale_staging
from zscrgan.data.release import FILES, write_dataset
from zscrgan.errors import UserError
from zscrgan.files import read_text_file

SPEC_FILE = "demo_spec.json"

# Bump when the generator's code changes what a given spec produces, so old folders are remade.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class DemoSpec:
    """Sizes and noise levels of a synthetic dataset; the same spec always yields the same data."""

    n_classes: int = 40
    n_seen: int = 30
    images_per_class: int = 60
    image_count_spread: float = 0.25  # each class has images_per_class * (1 +- spread) images
    texts_per_class: int = 5
    image_dim: int = 256
    text_dim: int = 64
    latent_dim: int = 16
    hidden_dim: int = 64  # width of the image map's hidden layer
    item_spread: float = 1.0  # std of one image's latent around u_c (class latents have std 1)
    text_noise: float = 1.0  # per-coordinate noise std, relative to the text signal's std
    image_noise: float = 0.5  # per-coordinate noise std, relative to the image signal's std
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.n_seen < self.n_classes:
            raise UserError(
                f"demo spec: n_seen must be between 1 and n_classes - 1 ({self.n_classes - 1}), "
                f"got {self.n_seen}"
            )
        for name in ("images_per_class", "texts_per_class", "image_dim", "text_dim",
                     "latent_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise UserError(f"demo spec: {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.image_count_spread < 1:
            raise UserError(
                f"demo spec: image_count_spread must be in [0, 1), got {self.image_count_spread}"
            )
        for name in ("item_spread", "text_noise", "image_noise"):
            if getattr(self, name) < 0:
                raise UserError(
                    f"demo spec: {name} must not be negative, got {getattr(self, name)}"
                )


# Sizes of the CUB benchmark (200 birds, 150 seen, ResNet-101 images, char-CNN-RNN text).
# Noise is per coordinate, and wider vectors average more of it away, so the wide text needs
# more of it to stay about as hard as CUB (ridge regression reaches Prec@50 about 0.5).
CUB_LIKE = DemoSpec(
    n_classes=200,
    n_seen=150,
    images_per_class=60,
    texts_per_class=10,
    image_dim=2048,
    text_dim=1024,
    latent_dim=32,
    hidden_dim=256,
    text_noise=5.0,
    image_noise=1.0,
)


def make_demo(spec: DemoSpec):
    """Generate a synthetic dataset: (image, text, seen, unseen).

    image/text map class ids 1..n_classes to float32 [n, dim] arrays (images non-negative);
    seen and unseen are disjoint lists of ids, seen in a shuffled order. Deterministic in `spec`.
    """
    rng = np.random.default_rng(spec.seed)
    ids = list(range(1, spec.n_classes + 1))
    order = [int(c) for c in rng.permutation(ids)]
    seen, unseen = order[: spec.n_seen], sorted(order[spec.n_seen:])

    latent = rng.standard_normal((spec.n_classes, spec.latent_dim))
    text_map = rng.standard_normal((spec.latent_dim, spec.text_dim)) / np.sqrt(spec.latent_dim)
    hidden_map = rng.standard_normal((spec.latent_dim, spec.hidden_dim)) / np.sqrt(spec.latent_dim)
    image_map = rng.standard_normal((spec.hidden_dim, spec.image_dim)) / np.sqrt(spec.hidden_dim)

    low = round(spec.images_per_class * (1 - spec.image_count_spread))
    high = round(spec.images_per_class * (1 + spec.image_count_spread))
    image_counts = rng.integers(max(low, 1), high + 1, size=spec.n_classes)

    owner = np.repeat(np.arange(spec.n_classes), image_counts)
    items = latent[owner] + spec.item_spread * rng.standard_normal((len(owner), spec.latent_dim))
    images = _image_vectors(items, hidden_map, image_map, spec.image_noise, rng)
    texts = _text_vectors(latent, spec.texts_per_class, text_map, spec.text_noise, rng)
    image = dict(zip(ids, np.split(images, np.cumsum(image_counts)[:-1])))
    text = dict(zip(ids, texts))
    return image, text, seen, unseen


def _text_vectors(latent, n, text_map, noise, rng):
    """[n_classes, n, text_dim]: each class's linear view plus noise (signal std is about 1)."""
    signal = (latent @ text_map)[:, None, :]
    noisy = signal + noise * rng.standard_normal((len(latent), n, text_map.shape[1]))
    return noisy.astype(np.float32)


def _image_vectors(items, hidden_map, image_map, noise, rng):
    """[n_items, image_dim]: a random tanh network of each item's latent, noised, then ReLU."""
    pre = np.tanh(items @ hidden_map) @ image_map
    pre += noise * pre.std() * rng.standard_normal(pre.shape)
    return np.maximum(pre, 0.0).astype(np.float32)


def ensure_demo(folder, spec: DemoSpec) -> None:
    """Make sure `folder` holds the demo dataset of `spec`.

    Leaves the folder alone when its recorded spec (demo_spec.json) matches and all dataset files
    are there; otherwise (re)writes it with write_dataset and records the spec last, so that an
    interrupted write is redone next time.
    """
    folder = Path(folder)
    clear_stale_staging(folder)  # what an interrupted earlier write left beside it
    wanted = _recorded_form(spec)
    if _recorded_spec(folder) == wanted and all((folder / f).is_file() for f in FILES):
        return
    write_dataset(folder, *make_demo(spec))
    _write_spec(folder / SPEC_FILE, wanted)


def _recorded_form(spec: DemoSpec) -> dict:
    return {"generator_version": GENERATOR_VERSION, **asdict(spec)}


def _recorded_spec(folder: Path):
    """The spec recorded in `folder`, or None when there is none or it cannot be read."""
    try:
        return json.loads(read_text_file(folder / SPEC_FILE, "demo spec (JSON)", 1 << 20))
    except (UserError, ValueError, RecursionError):  # missing, not a regular file, or not JSON
        return None


def _write_spec(path: Path, recorded: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
