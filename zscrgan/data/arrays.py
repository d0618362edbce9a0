"""Your own features as a dataset folder: image and text vectors with their class labels, in arrays.

    python -m zscrgan.data convert arrays --images X.npy --image_labels y.npy --texts T.npy \
        --text_labels t.npy --unseen 3,7 --class_names names.txt --out datasets/MINE
    python -m zscrgan.data convert arrays --npz mine.npz --unseen_fraction 0.25 --split_seed 0 --out datasets/MINE

`images` is an [N, image_dim] and `texts` a [M, text_dim] numeric array; `image_labels` [N] and
`text_labels` [M] hold each row's integer class id (>= 0). Every class needs at least one image and one
text. An .npz holds the same four arrays under those names (and optionally `class_names`). Arrays are
read with `allow_pickle=False`: loading never runs code, and an object array (a ragged one, say) is
refused. The folder is written as the other converters write theirs (zscrgan.data.convert): validated,
with its meta.json, complete or not at all.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from zscrgan.data.convert import _check_out, _finish, _int_array, _rows_by_class, _short, _take_rows
from zscrgan.errors import UserError, brief
from zscrgan.files import not_a_file

ARRAY_KEYS = ("images", "image_labels", "texts", "text_labels")
NAMES_KEY = "class_names"
DEFAULT_UNSEEN_FRACTION = 0.25
MAX_NAMES_BYTES = 16 << 20  # a class names file


def convert_arrays(out, *, images=None, image_labels=None, texts=None, text_labels=None, npz=None,
                   unseen=None, split_seed=None, unseen_fraction=None, class_names=None, overwrite=False):
    """Write the dataset folder `out` from four .npy files (or one .npz holding the four arrays).

    Unseen classes are `unseen` (class ids), or a share `unseen_fraction` (default 0.25, at least one
    class, never all) of the classes drawn with `split_seed` (default 0); the rest are seen.
    `class_names` is a UTF-8 text file (or the .npz's `class_names` array) with one name per class,
    in increasing class id order; the names are kept in meta.json. Returns the output folder; raises
    UserError naming the file and the problem, and writes nothing, on any bad input.
    """
    out = Path(out)
    _check_out(out, overwrite)
    files = {"images": images, "image_labels": image_labels, "texts": texts, "text_labels": text_labels}
    if unseen is not None and (split_seed is not None or unseen_fraction is not None):
        raise UserError("give either --unseen or --split_seed/--unseen_fraction, not both")
    if npz is not None:
        if any(path is not None for path in files.values()):
            raise UserError("give either --npz or the four .npy files (--images ...), not both")
        arrays, names = _read_npz(Path(npz))
        where = {key: f"{npz}: {key}" for key in ARRAY_KEYS}
        sources = [Path(npz)]
    else:
        missing = [f"--{key}" for key, path in files.items() if path is None]
        if missing:
            raise UserError(f"{', '.join(missing)} missing: give the four .npy files, or --npz with the four arrays")
        arrays = {key: _read_npy(Path(path)) for key, path in files.items()}
        where = {key: str(path) for key, path in files.items()}
        sources, names = [Path(p) for p in files.values()], None
    if class_names is not None:
        if names is not None:
            raise UserError(f"{npz} holds class_names and --class_names gives them too: give them once")
        names = _read_names_file(Path(class_names))
        sources.append(Path(class_names))

    image_rows = _rows(arrays, "images", "image_labels", where)
    text_rows = _rows(arrays, "texts", "text_labels", where)
    classes = sorted(image_rows)
    only_images = sorted(set(image_rows) - set(text_rows))
    only_texts = sorted(set(text_rows) - set(image_rows))
    if only_images or only_texts:
        side, ids, other = (("images", only_images, where["text_labels"]) if only_images
                            else ("texts", only_texts, where["image_labels"]))
        raise UserError(f"{other}: classes {_short(ids)} have {side} but none here; every class needs at least one "
                        "image and one text")
    if len(classes) < 2:
        raise UserError(f"{where['image_labels']}: one class only ({classes[0]}); a zero-shot split needs at least two")
    if names is not None and len(names) != len(classes):
        raise UserError(f"{class_names or npz}: {len(names)} class names for {len(classes)} classes; give one name "
                        "per class, in increasing class id order")
    drawn = unseen is None
    unseen = _unseen(classes, unseen, split_seed, unseen_fraction)
    seen = [c for c in classes if c not in unseen]

    image = {c: _take_rows(arrays["images"], rows, "images", where["images"]) for c, rows in image_rows.items()}
    text = {c: _take_rows(arrays["texts"], rows, "texts", where["texts"]) for c, rows in text_rows.items()}
    del arrays
    options = {"npz": Path(npz).name if npz is not None else None,
               "unseen": None if drawn else unseen,
               "split_seed": (0 if split_seed is None else split_seed) if drawn else None,
               "unseen_fraction": (DEFAULT_UNSEEN_FRACTION if unseen_fraction is None else unseen_fraction)
               if drawn else None}
    extra = {NAMES_KEY: {str(c): name for c, name in zip(classes, names)}} if names is not None else {}
    return _finish(out, "arrays", options, sources, image, text, seen, unseen, extra, overwrite)


def _unseen(classes: list[int], unseen, split_seed, fraction) -> list[int]:
    """The unseen classes: `unseen` checked against `classes`, or a share `fraction` drawn with `split_seed`."""
    if unseen is not None:
        listed = sorted(int(c) for c in unseen)
        unknown = sorted(set(listed) - set(classes))
        if unknown or len(set(listed)) != len(listed):
            raise UserError(f"--unseen {','.join(map(str, unseen))}: classes must be distinct ids among the labels' "
                            f"classes {_short(classes)}")
        if not 0 < len(listed) < len(classes):
            raise UserError(f"--unseen must name at least one of the {len(classes)} classes and leave one seen")
        return listed
    if split_seed is not None and split_seed < 0:
        raise UserError(f"--split_seed {split_seed}: must be an integer >= 0")
    fraction = DEFAULT_UNSEEN_FRACTION if fraction is None else fraction
    if not 0 < fraction < 1:
        raise UserError(f"--unseen_fraction {fraction}: must be between 0 and 1 (the share of classes left unseen)")
    count = min(len(classes) - 1, max(1, round(fraction * len(classes))))
    rng = np.random.default_rng(0 if split_seed is None else split_seed)
    return sorted(int(c) for c in rng.choice(classes, size=count, replace=False))


def _rows(arrays: dict, features_key: str, labels_key: str, where: dict) -> dict[int, np.ndarray]:
    """{class id: row indices of `features_key`}, after checking the features and the labels agree."""
    features, labels = arrays[features_key], arrays[labels_key]
    if features.ndim != 2 or 0 in features.shape or features.dtype.kind not in "fiu":
        raise UserError(f"{where[features_key]}: must be a non-empty 2-D numeric array (rows of features), found "
                        f"{features.dtype} of shape {features.shape}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.dtype.kind not in "fiu":
        raise UserError(f"{where[labels_key]}: must be a 1-D array of integer class ids, found {labels.dtype} of "
                        f"shape {labels.shape}")
    labels = _int_array(labels, labels_key, where[labels_key])
    if labels.size != features.shape[0]:
        raise UserError(f"{where[labels_key]}: {labels.size} labels for the {features.shape[0]} rows of "
                        f"{where[features_key]}: give one label per row")
    if labels.min() < 0:
        raise UserError(f"{where[labels_key]}: class id {labels.min()} is negative; class ids are integers >= 0")
    return _rows_by_class(labels, np.arange(labels.size))


def _read_npy(path: Path) -> np.ndarray:
    """A .npy file's array, never unpickling; UserError naming the file otherwise."""
    _check_file(path, "a .npy file (numpy.save)")
    try:
        value = np.load(path, mmap_mode="r", allow_pickle=False)  # each class's rows are copied out once
    except ValueError as err:
        raise UserError(f"{path}: {_load_problem(err)}") from None
    except (OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npy file ({brief(err)}): save the array with numpy.save") from None
    if not isinstance(value, np.ndarray):  # np.load reads an .npz archive whatever the file's name
        value.close()
        raise UserError(f"{path}: an .npz archive, not a .npy array: give it with --npz")
    return value


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """The four arrays of an .npz (and its class names, if it has them); UserError naming the key otherwise."""
    _check_file(path, "an .npz archive (numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise UserError(f"{path}: a single .npy array, not an .npz archive of {', '.join(ARRAY_KEYS)}")
            keys = set(archive.files)
            missing = [key for key in ARRAY_KEYS if key not in keys]
            unknown = sorted(keys - set(ARRAY_KEYS) - {NAMES_KEY})
            if missing or unknown:
                problem = f"no array {', '.join(missing)}" if missing else f"unknown array {brief(unknown[0])}"
                raise UserError(f"{path}: {problem}; an .npz holds {', '.join(ARRAY_KEYS)} (and optionally "
                                f"{NAMES_KEY}), found {brief(sorted(keys))}")
            arrays = {}
            for key in [*ARRAY_KEYS, NAMES_KEY]:
                if key in keys:
                    try:
                        arrays[key] = archive[key]
                    except ValueError as err:
                        raise UserError(f"{path}: {key}: {_load_problem(err)}") from None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{path}: not a readable .npz archive ({brief(err)}): save it with numpy.savez") from None
    names = arrays.pop(NAMES_KEY, None)
    if names is not None:
        if names.ndim != 1 or names.dtype.kind != "U":
            raise UserError(f"{path}: {NAMES_KEY} must be a 1-D array of strings, found {names.dtype} of shape "
                            f"{names.shape}")
        names = _check_names([str(n) for n in names], f"{path}: {NAMES_KEY}")
    return arrays, names


def _load_problem(err: ValueError) -> str:
    """What a ValueError of np.load says, in words a user can act on."""
    if "allow_pickle" in str(err) or "Python objects" in str(err):
        return ("holds Python objects (an object array, e.g. a ragged one), which are never loaded: "
                "save a numeric array of one shape")
    return f"not a readable numpy array ({brief(err)}): save it with numpy.save"


def _read_names_file(path: Path) -> list[str]:
    """The class names of a text file, one per line (a trailing empty line allowed)."""
    _check_file(path, "a text file of class names")
    try:
        if path.stat().st_size > MAX_NAMES_BYTES:
            raise UserError(f"{path}: larger than {MAX_NAMES_BYTES >> 20} MB; a class names file has one short "
                            "name per line")
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; give one class name per line") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    return _check_names([line.strip() for line in lines], str(path))


def _check_names(names: list[str], where: str) -> list[str]:
    for number, name in enumerate(names, 1):
        if not name:
            raise UserError(f"{where}: name {number} is empty; give one name per class, in increasing class id order")
    return names


def _check_file(path: Path, what: str) -> None:
    problem = not_a_file(path)
    if problem:
        raise UserError(f"{path}: {'no such file' if problem == 'missing' else problem}; expected {what}")
