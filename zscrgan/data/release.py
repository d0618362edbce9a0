"""The released dataset folder: class-wise image and text vectors and the seen/unseen split.

A folder holds four pickles, as the authors' Python 2 code wrote them:
- image_embed_dict.pkl: dict class id -> list of 1-D image vectors of that class
- txt_embed_dict.pkl:   dict class id -> list of 1-D text vectors of that class
- trainids.pkl:         list of seen (training) class ids, in the order the sampler walks them
- testids.pkl:          list of unseen class ids (the retrieval classes)
Classes in the dicts that are in neither split are ignored. A converted folder also holds `meta.json`
(see zscrgan.data.convert), which training reads only for its recommended input scaling.
"""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zscrgan.atomic import staged_folder
from zscrgan.data.safe_pickle import dump_pickle, load_pickle
from zscrgan.errors import UserError, brief
from zscrgan.files import not_a_file

FILES = ("image_embed_dict.pkl", "txt_embed_dict.pkl", "trainids.pkl", "testids.pkl")
IMAGE_FILE, TEXT_FILE, SEEN_FILE, UNSEEN_FILE = FILES
META_FILE = "meta.json"

_HOW_TO_GET = (
    "convert a public release with `python -m zscrgan.data convert ...` "
    "or download the authors' zip (see docs/data.md)"
)


@dataclass
class Dataset:
    """One released dataset: plain int class ids, a float32 [n, dim] array per class and modality."""

    name: str
    image: dict[int, np.ndarray]
    text: dict[int, np.ndarray]
    seen: list[int]
    unseen: list[int]

    @property
    def image_dim(self) -> int:
        return self.image[self.seen[0]].shape[1]

    @property
    def text_dim(self) -> int:
        return self.text[self.seen[0]].shape[1]

    def n_images(self, ids) -> int:
        """Number of image vectors over the classes `ids`."""
        return sum(len(self.image[c]) for c in ids)

    def n_texts(self, ids) -> int:
        """Number of text vectors over the classes `ids`."""
        return sum(len(self.text[c]) for c in ids)

    def describe(self) -> str:
        """One line: split sizes, item counts and dimensions."""
        classes = self.seen + self.unseen
        return (
            f"{self.name}: {len(self.seen)} seen / {len(self.unseen)} unseen classes, "
            f"{self.n_images(classes)} images ({self.image_dim}-d), "
            f"{self.n_texts(classes)} texts ({self.text_dim}-d)"
        )


def load_dataset(folder) -> Dataset:
    """Read and validate a released dataset folder.

    Accepts what Python 2 wrote: class ids as ints, numpy integers or digit strings; a class's
    vectors as a list of 1-D arrays or one 2-D array. Returns only the classes of the two splits,
    ids as plain ints and vectors as float32 [n, dim] arrays. Raises UserError, naming the file,
    on the first problem found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such dataset folder; {_HOW_TO_GET}")
    for name in FILES:
        problem = not_a_file(folder / name)
        if problem == "missing":
            raise UserError(
                f"{folder / name}: missing (a dataset folder holds {', '.join(FILES)}); "
                f"{_HOW_TO_GET}"
            )
        if problem:
            raise UserError(f"{folder / name}: {problem}; a dataset file must be a regular pickle file")
    seen = _class_ids(load_pickle(folder / SEEN_FILE), folder / SEEN_FILE)
    unseen = _class_ids(load_pickle(folder / UNSEEN_FILE), folder / UNSEEN_FILE)
    wanted = seen + unseen
    image = _split_matrices(load_pickle(folder / IMAGE_FILE), wanted, folder / IMAGE_FILE)
    text = _split_matrices(load_pickle(folder / TEXT_FILE), wanted, folder / TEXT_FILE)
    dataset = Dataset(folder.name, image, text, seen, unseen)
    validate(dataset, folder)
    return dataset


def validate(ds: Dataset, folder) -> None:
    """Check that `ds` is usable for zero-shot retrieval; raise UserError on the first problem.

    Both splits non-empty, without repeats and disjoint; every split class present in both
    dicts with at least one vector; one dimension per modality; only finite values.
    Messages name the file of `folder` that holds the problem.
    """
    folder = Path(folder)
    _check_split(ds.seen, folder / SEEN_FILE, "seen")
    _check_split(ds.unseen, folder / UNSEEN_FILE, "unseen")
    both = set(ds.seen) & set(ds.unseen)
    if both:
        raise UserError(
            f"{folder / UNSEEN_FILE}: class {min(both)} is also in {SEEN_FILE}; "
            "a class is either seen or unseen: remove it from one split"
        )
    _check_vectors(ds.image, ds.seen + ds.unseen, folder / IMAGE_FILE, "image")
    _check_vectors(ds.text, ds.seen + ds.unseen, folder / TEXT_FILE, "text")


def read_meta(folder) -> dict:
    """A converted folder's meta.json as a dict ({} without one); UserError when it is not a JSON object."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise UserError(f"{path}: not readable JSON ({type(err).__name__}); convert the dataset again") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a JSON object; convert the dataset again")
    return meta


def class_names(folder) -> dict[int, str]:
    """The class names a converter kept in the folder's meta.json ({} where it kept none)."""
    names = read_meta(folder).get("class_names", {})
    if not (isinstance(names, dict) and all(_class_id(k) is not None and isinstance(v, str) for k, v in names.items())):
        raise UserError(f"{Path(folder) / META_FILE}: class_names must map class ids to names; convert the dataset again")
    return {_class_id(k): v for k, v in names.items()}


def write_dataset(folder, image, text, seen, unseen, extra_files: dict[str, str] | None = None) -> None:
    """Write a dataset folder in the released format, replacing `folder` as a whole.

    `image`/`text` map class id -> vectors (a 2-D array or a list of 1-D arrays). The data is
    validated first. Writes dict int -> list of 1-D float32 arrays and lists of plain ints,
    pickle protocol 2. The new folder is assembled beside the target and renamed into place,
    so on any error the previous folder (if any) is left as it was and no partial folder remains.
    `extra_files` (name -> text) are written into the folder as part of the same swap.
    """
    folder = Path(folder)
    image = _all_matrices(image, folder / IMAGE_FILE)
    text = _all_matrices(text, folder / TEXT_FILE)
    seen = _class_ids(seen, folder / SEEN_FILE)
    unseen = _class_ids(unseen, folder / UNSEEN_FILE)
    validate(Dataset(folder.name, image, text, seen, unseen), folder)
    contents = {
        IMAGE_FILE: _as_released(image),
        TEXT_FILE: _as_released(text),
        SEEN_FILE: seen,
        UNSEEN_FILE: unseen,
    }
    try:
        with staged_folder(folder) as staging:
            for name, obj in contents.items():
                dump_pickle(obj, staging / name)
            for name, text in (extra_files or {}).items():
                (staging / name).write_text(text, encoding="utf-8")
    except OSError as err:
        raise UserError(f"{folder}: cannot write the dataset folder: {err.strerror or err}; "
                        "check that its parent folder is writable") from None


def _as_released(matrices: dict[int, np.ndarray]) -> dict[int, list[np.ndarray]]:
    return {c: list(m) for c, m in matrices.items()}


# Class ids are non-negative and fit numpy's int64, the type labels take in training and evaluation.
MAX_CLASS_ID = 2**63 - 1


def _class_id(value):
    """A plain int for an int, numpy integer or digit string from 0 to MAX_CLASS_ID; None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        cid = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        cid = int(value)
    else:
        return None
    return cid if 0 <= cid <= MAX_CLASS_ID else None


def _class_ids(raw, path: Path) -> list[int]:
    """The split file's class ids, in file order, as plain ints."""
    is_vector = isinstance(raw, np.ndarray) and raw.ndim == 1
    if not (isinstance(raw, (list, tuple)) or is_vector):
        raise UserError(
            f"{path}: expected a list of integer class ids, found {type(raw).__name__}; "
            "rewrite the split as a list of ints"
        )
    ids = [_class_id(v) for v in raw]
    for value, cid in zip(raw, ids):
        if cid is None:
            raise UserError(
                f"{path}: expected a list of integer class ids from 0 to 2**63-1, found {brief(value)} "
                f"({type(value).__name__}); rewrite the split as a list of ints"
            )
    return ids


def _by_class(raw, path: Path) -> dict:
    """The dict file's entries keyed by plain int class id, values untouched."""
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: expected a dict from class id to a list of vectors, "
            f"found {type(raw).__name__}; rewrite it in the released format"
        )
    entries = {}
    for key, value in raw.items():
        cid = _class_id(key)
        if cid is None:
            raise UserError(f"{path}: key {brief(key)} is not an integer class id from 0 to 2**63-1; use int keys")
        if cid in entries:
            raise UserError(f"{path}: class {cid} appears under two keys; keep one")
        entries[cid] = value
    return entries


def _split_matrices(raw, wanted: list[int], path: Path) -> dict[int, np.ndarray]:
    """Matrices of the classes in `wanted` that the dict holds; the others are never converted."""
    entries = _by_class(raw, path)
    return {c: _as_matrix(entries[c], c, path) for c in wanted if c in entries}


def _all_matrices(raw, path: Path) -> dict[int, np.ndarray]:
    return {c: _as_matrix(v, c, path) for c, v in _by_class(raw, path).items()}


def _as_matrix(value, cid: int, path: Path) -> np.ndarray:
    """A class's vectors as a float32 [n, dim] array; [0, 0] when it has none."""
    if isinstance(value, np.ndarray) and value.ndim == 2:
        rows = list(value)
    elif isinstance(value, (list, tuple)):
        rows = value
    else:
        raise UserError(
            f"{path}: class {cid} holds a {_kind(value)}; expected a list of 1-D vectors"
        )
    vectors = [_numeric_vector(row) for row in rows]
    for i, (row, v) in enumerate(zip(rows, vectors)):
        if v is None:
            raise UserError(
                f"{path}: class {cid}, item {i} is not a 1-D numeric vector "
                f"({_kind(row)}); expected a list of 1-D vectors"
            )
    lengths = sorted({len(v) for v in vectors})
    if len(lengths) > 1:
        raise UserError(
            f"{path}: class {cid} holds vectors of different lengths {lengths}; "
            "all vectors of a modality must have one dimension"
        )
    if not vectors:
        return np.zeros((0, 0), np.float32)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, which validation reports
        return np.stack(vectors).astype(np.float32, copy=False)


def _numeric_vector(row):
    """`row` as a 1-D int or float array, or None when it is anything else.

    Only a numpy array or a flat list or tuple of numbers is converted: numpy would read bytes-like
    objects as uint8 and would expand nested lists (which shared references can make astronomically
    large) before anything could refuse them.
    """
    if isinstance(row, (list, tuple)):
        if not all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) for x in row):
            return None
        try:
            row = np.asarray(row)
        except OverflowError:  # an int beyond what numpy holds
            return None
    if not isinstance(row, np.ndarray):
        return None
    return row if row.ndim == 1 and row.dtype.kind in "fiu" else None


def _kind(value) -> str:
    """A value's type and, for an array, its shape: what an error message shows of it, cheaply."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _check_split(ids: list[int], path: Path, which: str) -> None:
    if not ids:
        raise UserError(f"{path}: the {which} split is empty; list at least one class id")
    repeated = [c for c, n in Counter(ids).items() if n > 1]
    if repeated:
        raise UserError(
            f"{path}: class {repeated[0]} is listed more than once; list each class once"
        )


def _check_vectors(matrices: dict[int, np.ndarray], ids: list[int], path: Path, what: str) -> None:
    dim, first = None, None
    for c in ids:
        if c not in matrices:
            raise UserError(
                f"{path}: class {c} of the split has no entry; add its {what} vectors "
                "or remove it from the split"
            )
        m = matrices[c]
        if m.ndim != 2 or 0 in m.shape:
            raise UserError(
                f"{path}: class {c} has no {what} vectors (or only empty ones); "
                "add some or remove it from the split"
            )
        if dim is None:
            dim, first = m.shape[1], c
        if m.shape[1] != dim:
            raise UserError(
                f"{path}: class {c} has {m.shape[1]}-d {what} vectors but class {first} has "
                f"{dim}-d; all {what} vectors must have one dimension"
            )
        if not np.isfinite(m).all():
            raise UserError(
                f"{path}: class {c} has NaN or infinite values (or values beyond float32) in its {what} vectors; "
                "recompute or drop that class's features"
            )
