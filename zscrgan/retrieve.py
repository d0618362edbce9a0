"""Search your own image collection with a trained run: rank gallery rows for text vectors.

    python -m zscrgan.retrieve RUN_DIR --queries texts.npy --gallery images.npy --out ranked.npz
        [--top_k K] [--seed 0] [--eval_draws N] [--chunk_rows 4096] [--data_root datasets]
    python -m zscrgan.retrieve RUN_DIR --gallery images.npy [--ids ids.npy] --save_index INDEX_DIR
    python -m zscrgan.retrieve RUN_DIR --index INDEX_DIR --queries texts.npy --out ranked.npz

RUN_DIR is a run folder written by training; the selected round's weights (checkpoints/best) are used.
texts.npy holds [Q, text_dim] float text vectors, images.npy [G, image_dim] float raw image features,
of the same kinds as the run's training dataset. The gallery is memory-mapped and embedded and scored
in chunks with a running top-K merge, so memory does not grow with it. Each query is CSEM(G(c, z)),
averaged over `--eval_draws` noise draws (default: the run's eval_draws), drawn from `--seed`: the same
seed and inputs give the same output (for ZSCRGAN; every method embeds texts and images into a space
where cosine ranks the gallery, see `zscrgan.methods`). A run trained with input scaling scales both files as it scaled
its training data (the factors are in RUN_DIR/input_scaling.json).

The output file (numpy .npz, written atomically, at exactly the given name) holds `indices` [Q, K]
(int64 gallery row numbers) and `scores` [Q, K] (float32 cosine similarities), best first, ties ranked
by the lower row; K is --top_k (default: the run's top_k), or G if the gallery is smaller.

`--save_index DIR` embeds the gallery once into an index folder (`zscrgan.gallery_index`: unit-normalised
embeddings, memory-mapped, each row's id from `--ids` or its row number, and what made it); with
`--queries` and `--out` it also searches it. `--index DIR` searches a saved index instead of a gallery,
with the same result as embedding the gallery again, and adds `ids` [Q, K] (the rows' ids) to the
output; an index made by another run (other weights) is refused.

From Python (the faiss shape: search returns scores and indices):

    from zscrgan.retrieve import load_run
    run = load_run("runs/CUB/20261129-120000-seed0")
    scores, indices = run.search(texts, np.load("images.npy", mmap_mode="r"), k=50)
    index = run.save_index("gallery_index", np.load("images.npy", mmap_mode="r"))   # embedded once
    scores, indices = run.search(texts, index, k=50)    # or open_index("gallery_index"); index.ids[indices]
    run.embed_texts(texts), run.embed_images(images)   # [n, embed_dim] common-space vectors

A query may be one vector [text_dim] or many [n, text_dim]; results are always [n, K] ([1, K] for one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zscrgan.tf_start import start_tensorflow

tf = start_tensorflow()  # before the modules below import it: its start-up noise filtered out

from zscrgan.atomic import atomic_file  # noqa: E402
from zscrgan.cli import DATA_ROOT_ENV  # noqa: E402
from zscrgan.config import MAX_EVAL_DRAWS, MAX_INT, load_run_config  # noqa: E402
from zscrgan.flags import ArgumentParser  # noqa: E402
from zscrgan.gallery_index import GalleryIndex, build_index, check_ids, file_record  # noqa: E402
from zscrgan.data.release import load_dataset  # noqa: E402
from zscrgan.data.scaling import check_scaling_record, scale_rows, scaling_record  # noqa: E402
from zscrgan.errors import UserError, brief  # noqa: E402
from zscrgan.files import not_a_file, not_an_output_file, read_json  # noqa: E402
from zscrgan.evaluate import in_chunks  # noqa: E402
from zscrgan.methods import build_method  # noqa: E402
from zscrgan.methods.base import Method  # noqa: E402
from zscrgan.run import CORRUPT, SCALING_FILE, find_checkpoint, read_checkpoint, read_state  # noqa: E402
from zscrgan.search import GALLERY_CHUNK, search  # noqa: E402

# Checkpoint entries whose shapes give the input dimensions of a ZSCRGAN run saved before the
# dimensions were recorded in its state.json: [image_dim, e] and [text_dim, 2e].
_CSEM_KERNEL = "model/csem/fc/kernel/.ATTRIBUTES/VARIABLE_VALUE"
_ENCODER_KERNEL = "model/encoder/fc/kernel/.ATTRIBUTES/VARIABLE_VALUE"


@dataclass
class Retriever:
    """A trained model ready to embed text and image vectors and to search galleries of any size."""

    method: Method
    scaling: dict  # `zscrgan.data.scaling.scaling_record` of the run's dataset
    eval_draws: int
    top_k: int
    identity: dict = field(default_factory=dict)  # the run as a saved index records it (see `load_run`)

    @property
    def text_dim(self) -> int:
        return self.method.text_dim

    @property
    def image_dim(self) -> int:
        return self.method.image_dim

    def embed_texts(self, texts, seed: int = 0, draws: int | None = None) -> np.ndarray:
        """Common-space vectors [n, e] of raw text vectors [n, text_dim] (ZSCRGAN: CSEM(G(c, z))),
        averaged over `draws` noise draws (default: the run's eval_draws), the noise drawn from `seed`."""
        self.method.reset_noise(seed)
        draws = draws or self.eval_draws
        texts = _rows(texts, self.text_dim, "queries", "text vectors")
        texts = scale_rows(texts, self.scaling["input_scaling"], self.scaling["text_factor"])
        return in_chunks(lambda rows: self.method.embed_queries(rows, draws), texts).numpy()

    def embed_images(self, images) -> np.ndarray:
        """Common-space vectors [n, e] of raw image features [n, image_dim] (or one vector [image_dim])
        (ZSCRGAN: CSEM(x))."""
        return in_chunks(self._embed_gallery, _rows(images, self.image_dim, "images", "image features")).numpy()

    def search(self, texts, gallery, k: int | None = None, seed: int = 0, draws: int | None = None,
               chunk_rows: int | None = None, gallery_name: str = "gallery") -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, K], indices [Q, K]) of each text's most similar gallery rows, best first.

        `texts` are [Q, text_dim] raw text vectors (one vector [text_dim] is Q = 1). `gallery` is
        [G, image_dim] raw image features, an array or a memory-mapped .npy, read `chunk_rows` rows at
        a time (default GALLERY_CHUNK), or a `GalleryIndex` of this run (`save_index`), read as it was
        built. K = k (default: the run's top_k), or G if smaller; ties rank the lower row first.
        `seed` and `draws` as in `embed_texts`. Shapes that do not fit the run are one UserError.
        """
        queries = self.embed_texts(texts, seed, draws)
        if isinstance(gallery, GalleryIndex):
            self.check_index(gallery)
            return search(queries, gallery.embeddings, k or self.top_k, chunk_rows=chunk_rows or gallery.meta.get("chunk_rows", GALLERY_CHUNK),
                          gallery_name=str(gallery.folder), normalized=True)
        shape = getattr(gallery, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.image_dim or shape[0] == 0:
            raise UserError(f"{gallery_name}: must be [rows, {self.image_dim}] image features "
                            f"(at least one row), got shape {shape}")
        return search(queries, gallery, k or self.top_k, embed=self._embed_gallery,
                      chunk_rows=chunk_rows or GALLERY_CHUNK, gallery_name=gallery_name)

    def save_index(self, folder, gallery, ids=None, chunk_rows: int = GALLERY_CHUNK, gallery_file=None,
                   gallery_name: str = "gallery") -> GalleryIndex:
        """Embed `gallery` [G, image_dim] once into an index folder (`zscrgan.gallery_index`), written
        atomically, and return it opened. `ids`: one id per row (default: row numbers); `gallery_file`:
        the gallery's file, recorded (size, mtime, sha256) in the index."""
        shape = getattr(gallery, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.image_dim or shape[0] == 0:
            raise UserError(f"{gallery_name}: must be [rows, {self.image_dim}] image features "
                            f"(at least one row), got shape {shape}")
        return build_index(folder, gallery, self._embed_gallery, self.identity,
                           None if gallery_file is None else file_record(gallery_file), ids, chunk_rows, gallery_name)

    def check_index(self, index: GalleryIndex) -> None:
        """Refuse (UserError, one line) an index that another run's weights embedded."""
        made_by = index.meta.get("run", {})
        if made_by.get("fingerprint") != self.identity.get("fingerprint"):
            raise UserError(f"{index.folder}: an index of another run ({made_by.get('run_dir', 'unknown')}, "
                            f"{made_by.get('method', '?')} round {made_by.get('round', '?')}); build one for "
                            f"{self.identity.get('run_dir')} with --save_index")

    def _embed_gallery(self, rows: tf.Tensor) -> tf.Tensor:
        mode = self.scaling["input_scaling"]
        if mode != "none":
            rows = tf.convert_to_tensor(scale_rows(rows.numpy(), mode, self.scaling["image_factor"]))
        return self.method.embed_gallery(rows)


def load_run(run_dir, data_root="datasets") -> Retriever:
    """The selected round's weights of a run folder, with the run's input scaling.

    `data_root` is read only for a `seen_rms` run folder without input_scaling.json (written by
    older versions): the factors are then recomputed from the run's dataset there.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    folder = find_checkpoint(run_dir / "checkpoints" / "best")
    if folder is None:
        raise UserError(f"{run_dir / 'checkpoints' / 'best'}: no saved weights; the run has not finished a round")
    scaling = _run_scaling(run_dir, cfg, Path(data_root))
    image_dim, text_dim = _saved_dims(folder)
    method = build_method(cfg, image_dim, text_dim)
    state = read_checkpoint(tf.train.Checkpoint(**method.weight_objects()), folder)
    # The weights' index file holds a checksum of every saved tensor: with the scaling, it names the model.
    fingerprint = hashlib.sha256((folder / "ckpt.index").read_bytes() + json.dumps(scaling, sort_keys=True).encode())
    identity = {"run_dir": str(run_dir.resolve()), "method": cfg.method, "round": state.get("round"),
                "fingerprint": fingerprint.hexdigest()}
    return Retriever(method, scaling, cfg.eval_draws, cfg.top_k, identity)


def _rows(x, dim: int, what: str, kind: str) -> np.ndarray:
    """`x` as float32 rows [n, dim] (one vector [dim] is n = 1); one UserError naming `what` otherwise."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused by the callers' checks
            x = np.asarray(x, np.float32)
    except (TypeError, ValueError) as e:
        raise UserError(f"{what}: not an array of numbers ({e})") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise UserError(f"{what}: must be [n, {dim}] {kind} (or one vector [{dim}]), got shape {x.shape}")
    return x


def _saved_dims(folder: Path) -> tuple[int, int]:
    """(image_dim, text_dim) of the data a saved checkpoint was trained on: from its state.json, or for
    a ZSCRGAN checkpoint of an older version, from its weights' shapes."""
    state = read_state(folder)
    dims = (state.get("image_dim"), state.get("text_dim"))
    if all(type(d) is int and 0 < d <= MAX_INT for d in dims):
        return dims
    try:
        shapes = tf.train.load_checkpoint(str(folder / "ckpt")).get_variable_to_shape_map()
        return int(shapes[_CSEM_KERNEL][0]), int(shapes[_ENCODER_KERNEL][0])
    except Exception as err:  # a damaged or foreign checkpoint fails inside TensorFlow in many ways
        raise UserError(f"{folder}: the input dimensions cannot be read ({brief(err)}); {CORRUPT}") from None


def _run_scaling(run_dir: Path, cfg, data_root: Path) -> dict:
    """The run's scaling record: saved in the run folder, or for modes without factors, from the config."""
    path = run_dir / SCALING_FILE
    if os.path.lexists(path):
        return check_scaling_record(read_json(path, "the run's input scaling"), path)
    if cfg.input_scaling != "seen_rms":
        return {"input_scaling": cfg.input_scaling, "image_factor": None, "text_factor": None}
    ds = load_dataset(data_root / cfg.dataset)
    return scaling_record(ds.image, ds.text, ds.seen, cfg.input_scaling)


def open_matrix(path, dim_name: str) -> np.ndarray:
    """A 2-D floating-point .npy file with at least one row, memory-mapped (rows are read when used)."""
    problem = not_a_file(path)  # a FIFO or device would block or never end
    if problem:
        raise UserError(f"{path}: {'not found' if problem == 'missing' else problem}; give a .npy file")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(x, np.ndarray):
        raise UserError(f"{path}: holds several arrays (.npz); give one .npy array")
    if x.ndim != 2:
        raise UserError(f"{path}: must be a 2-D array [rows, {dim_name}], got shape {x.shape}")
    if x.dtype.kind != "f":
        raise UserError(f"{path}: must hold floating-point numbers, got {x.dtype}")
    if x.shape[0] == 0:
        raise UserError(f"{path}: has no rows")
    return x


def _check_dim(x: np.ndarray, path, want: int, what: str) -> None:
    if x.shape[1] != want:
        raise UserError(f"{path}: rows of dimension {x.shape[1]}, but the run's model takes {want}-d {what}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m zscrgan.retrieve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by training")
    p.add_argument("--queries", metavar="FILE", help=".npy [Q, text_dim] float text vectors")
    p.add_argument("--gallery", metavar="FILE", help=".npy [G, image_dim] float raw image features (memory-mapped)")
    p.add_argument("--out", metavar="FILE", help="output .npz: `indices` and `scores` [Q, K] (and `ids` with --index)")
    p.add_argument("--save_index", metavar="DIR",
                   help="embed --gallery once into this index folder (a new folder, or an index, which is replaced)")
    p.add_argument("--ids", metavar="FILE", help="with --save_index: .npy [G] of the gallery rows' ids "
                                                   "(numbers or strings; default: the row numbers)")
    p.add_argument("--index", metavar="DIR", help="search this saved index (of RUN_DIR) instead of --gallery")
    p.add_argument("--top_k", type=int, metavar="K", help="gallery rows per query (default: the run's top_k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query noise draws (default 0)")
    p.add_argument("--eval_draws", type=int, metavar="N",
                   help="noise draws averaged per query (default: the run's eval_draws)")
    p.add_argument("--chunk_rows", type=int,
                   help=f"gallery rows embedded and scored at once (default {GALLERY_CHUNK}; "
                        "with --index, the index's own, which gives the scores of embedding the gallery again)")
    p.add_argument("--data_root", default=os.environ.get(DATA_ROOT_ENV) or "datasets",
                   help=f"folder holding the dataset folders (default: ${DATA_ROOT_ENV} if set, else ./datasets); "
                        "read only for an older seen_rms run without input_scaling.json")
    return p


def _check_modes(args) -> None:
    """The flags of one of the three uses: search a gallery, save an index (and search it), search an index."""
    if args.index and (args.gallery or args.save_index or args.ids):
        raise UserError("--index searches a saved index: give it without --gallery, --save_index and --ids")
    if not args.index and not args.gallery:
        raise UserError("give --gallery FILE (image features) or --index DIR (a saved index)")
    if args.ids and not args.save_index:
        raise UserError("--ids: the rows' ids are saved with an index; give --save_index DIR as well")
    if not args.save_index and not (args.queries and args.out):
        raise UserError("give --queries FILE and --out FILE (or --save_index DIR to only embed the gallery)")
    if bool(args.queries) != bool(args.out):
        raise UserError("--queries and --out go together: give both or, with --save_index, neither")
    for flag in ("top_k", "eval_draws", "chunk_rows"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag}: must be at least 1, got {value}")
    if args.eval_draws is not None and args.eval_draws > MAX_EVAL_DRAWS:
        raise UserError(f"--eval_draws: must be at most {MAX_EVAL_DRAWS}, got {args.eval_draws}")
    problem = args.out and not_an_output_file(args.out)
    if problem:
        raise UserError(f"--out {args.out}: {problem}; give the path of a new or regular .npz file")
    if args.save_index and not Path(args.save_index).parent.is_dir():
        raise UserError(f"--save_index {args.save_index}: folder {Path(args.save_index).parent} does not exist")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_modes(args)
        queries = args.queries and open_matrix(args.queries, "text_dim")
        gallery = args.gallery and open_matrix(args.gallery, "image_dim")
        ids = args.ids and _open_ids(args.ids)
        index = args.index and GalleryIndex.open(args.index)
        retriever = load_run(args.run_dir, args.data_root)
        if args.queries:
            _check_dim(queries, args.queries, retriever.text_dim, "text vectors")
            with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 are refused just below
                queries = np.asarray(queries, np.float32)
            bad = np.flatnonzero(~np.isfinite(queries).all(axis=1))
            if bad.size:
                raise UserError(f"{args.queries}: NaN or infinite values in {bad.size} rows, the first row {bad[0]}")
        if args.gallery:
            _check_dim(gallery, args.gallery, retriever.image_dim, "image features")
        if index:
            retriever.check_index(index)
        if args.save_index:
            if ids is not None:
                check_ids(ids, gallery.shape[0], args.ids)
            index = retriever.save_index(args.save_index, gallery, ids, args.chunk_rows or GALLERY_CHUNK,
                                         args.gallery, gallery_name=args.gallery)
            print(f"index of {gallery.shape[0]} gallery rows ({index.meta['embed_dim']}-d) written to {args.save_index}")
        if not args.queries:
            return 0
        scores, indices = retriever.search(queries, index or gallery, args.top_k, args.seed, args.eval_draws,
                                           args.chunk_rows, gallery_name=args.gallery or args.index)
        found = {"indices": indices, "scores": scores}
        if index:
            found["ids"] = np.asarray(index.ids)[indices]
        try:
            with atomic_file(Path(args.out), "wb") as f:
                np.savez(f, **found)
        except OSError as e:  # a full disk, a folder that went away: nothing is left behind
            raise UserError(f"{args.out}: cannot write: {e.strerror or e}") from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = index.embeddings.shape[0] if index else gallery.shape[0]
    print(f"ranked {rows} gallery rows for {queries.shape[0]} queries: top {indices.shape[1]} written to {args.out}")
    return 0


def _open_ids(path) -> np.ndarray:
    """The --ids file: a .npy array (its shape is checked against the gallery later)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy array ({e})") from None


if __name__ == "__main__":
    sys.exit(main())
