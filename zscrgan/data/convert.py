"""Converters from public feature releases to the released dataset folder format.

One function per source (`convert_xlsa17`, `convert_gazsl`, `convert_wikipedia`). Each reads and
checks its source files, groups the feature rows by class, and writes the four pickles plus
`meta.json` (source files with their SHA-256, class split, dimensions, counts, converter name and
options). The output folder appears complete or not at all: everything is written into a hidden
staging folder beside it and renamed into place; on any error nothing is left behind, and an
existing folder is only replaced (with `overwrite=True`) once its successor is complete.

Large sources are held once: each class's rows are copied out of the loaded matrix (as float32)
one class at a time, and the loaded matrix is released before the pickles are written.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from zscrgan.data.release import MAX_CLASS_ID, META_FILE, _numeric_vector, write_dataset
from zscrgan.data.safe_pickle import load_pickle
from zscrgan.data.scaling import SCALING_REASONS, recommend_scaling
from zscrgan.errors import UserError, brief
from zscrgan.files import not_a_file

SOURCES = ("xlsa17", "gazsl", "wikipedia")

# GAZSL's own file names; the NABird feature files carry the split name also for "easy".
_GAZSL_NAMES = {
    "CUB": {
        "split": "train_test_split_{split}.mat",
        "feat": {"easy": "pfc_feat_{part}.mat", "hard": "pfc_feat_{part}_hard.mat"},
        "tfidf": ("CUB_Porter_7551D_TFIDF_new_original.mat", "CUB_Porter_7551D_TFIDF_new.mat"),
    },
    "NAB": {
        "split": "train_test_split_NABird_{split}.mat",
        "feat": {"easy": "pfc_feat_{part}_easy.mat", "hard": "pfc_feat_{part}_hard.mat"},
        "tfidf": ("NAB_Porter_13217D_TFIDF_new_original.mat", "NAB_Porter_13217D_TFIDF_new.mat"),
    },
}
_GAZSL_LABELS = {"easy": "labels_{part}.pkl", "hard": "labels_{part}_hard.pkl"}

_WIKI_TEXT_KEYS = {"lda": ("T_tr", "T_te"), "tfidf": ("T_tfidf_tr", "T_tfidf_te")}
_WIKI_LISTS = ("trainset_txt_img_cat.list", "testset_txt_img_cat.list")
# The usual names of the SVCL Wikipedia categories 1..10; the release has no names file to check them against.
_WIKI_NAMES = ("art & architecture", "biology", "geography & places", "history", "literature & theatre", "media",
               "music", "royalty & nobility", "sport & recreation", "warfare")


# --------------------------------------------------------------------------- xlsa17


def convert_xlsa17(src_dir, out, *, text="att", with_test_seen=False, overwrite=False):
    """Convert an xlsa17 dataset folder (res101.mat + att_splits.mat) into `out`.

    Seen classes are the classes of `trainval_loc`, unseen ones those of `test_unseen_loc`.
    A seen class gets its `trainval_loc` images (plus its `test_seen_loc` images with
    `with_test_seen`); an unseen class gets its `test_unseen_loc` images. Each class has one text
    vector: its column of `att` (`text="att"`, from att_splits.mat) or of sent_splits.mat's
    `att` (`text="sent"`, char-CNN-RNN sentences; CUB). Class id = the 1-based label.
    Returns the output folder; raises UserError naming the file at fault and writes nothing.
    """
    src, out = Path(src_dir), Path(out)
    _check_out(out, overwrite)
    if text not in ("att", "sent"):
        raise UserError(f"unknown --text {text!r} for xlsa17: use att or sent")
    sources = []

    splits_path = src / "att_splits.mat"
    loc_keys = ["trainval_loc", "test_unseen_loc"] + (["test_seen_loc"] if with_test_seen else [])
    splits = _load_mat(splits_path, loc_keys + (["att"] if text == "att" else []),
                       optional=["allclasses_names"])
    sources.append(splits_path)
    locs = {key: _loc_array(splits[key], key, splits_path) for key in loc_keys}
    seen_rows = np.concatenate([locs["trainval_loc"]] + ([locs["test_seen_loc"]] if with_test_seen else []))
    unseen_rows = locs["test_unseen_loc"]

    if text == "sent":
        text_path = src / "sent_splits.mat"
        att = _load_mat(text_path, ["att"])["att"]
        sources.append(text_path)
    else:
        text_path, att = splits_path, splits["att"]
    att = _matrix(att, "att", text_path)
    n_classes = att.shape[1]
    names = _xlsa17_names(splits.get("allclasses_names"), n_classes, splits_path, text_path)
    del splits

    res_path = src / "res101.mat"
    res = _load_mat(res_path, ["features", "labels"])
    sources.append(res_path)
    features = _matrix(res.pop("features"), "features", res_path)
    labels = res.pop("labels")
    n_images = features.shape[1]
    if labels.size != n_images or labels.ndim != 2 or min(labels.shape) != 1:
        raise UserError(f"{res_path}: labels has shape {labels.shape} but features has {n_images} columns "
                        f"(images); labels must be {n_images} x 1: the file is not an xlsa17 res101.mat")
    labels = _int_array(labels.ravel(), "labels", res_path)
    if labels.min() < 1 or labels.max() > n_classes:
        raise UserError(f"{res_path}: labels run from {labels.min()} to {labels.max()} but {text_path.name}'s "
                        f"att has {n_classes} class columns (label j+1 = column j): "
                        "take both files from the same xlsa17 dataset folder")
    for key, rows in locs.items():
        if rows.max() > n_images:
            raise UserError(f"{splits_path}: {key} refers to image row {rows.max()} but {res_path.name} has "
                            f"{n_images} images: take both files from the same xlsa17 dataset folder")

    seen_by_class = _rows_by_class(labels[seen_rows - 1], seen_rows - 1)
    unseen_by_class = _rows_by_class(labels[unseen_rows - 1], unseen_rows - 1)
    both = sorted(set(seen_by_class) & set(unseen_by_class))
    if both:
        raise UserError(f"{splits_path}: classes {both} have images both in the seen rows and in test_unseen_loc "
                        f"(labels from {res_path.name}); the class splits must not overlap")
    missing = sorted(set(range(1, n_classes + 1)) - set(seen_by_class) - set(unseen_by_class))
    if missing:
        raise UserError(f"{text_path}: att has {n_classes} class columns but classes {_short(missing)} have no "
                        f"images in {' / '.join(loc_keys)}: the text matrix must have one column per class")

    features = features.T  # N x D view; MATLAB's column-major storage makes its rows contiguous
    # One float32 copy per class, then the float64 source goes: never a third full copy.
    image = {}
    for rows_by_class in (seen_by_class, unseen_by_class):
        for c, rows in rows_by_class.items():
            image[c] = _take_rows(features, rows, "features", res_path)
    del features, res
    att = att.T
    texts = {c: _take_rows(att, [c - 1], "att", text_path) for c in image}

    options = {"text": text, "with_test_seen": with_test_seen}
    extra = {"class_names": {str(c): names[c - 1] for c in sorted(image)}} if names else {}
    return _finish(out, "xlsa17", options, sources, image, texts,
                   sorted(seen_by_class), sorted(unseen_by_class), extra, overwrite)


def _xlsa17_names(cell, n_classes, splits_path, text_path):
    """Class names from `allclasses_names` (a C x 1 cell of strings), or None where absent."""
    if cell is None:
        return None
    names = [str(np.asarray(entry).ravel()[0]) if np.asarray(entry).size else "" for entry in cell.ravel()]
    if len(names) != n_classes:
        raise UserError(f"{splits_path}: allclasses_names has {len(names)} classes but {text_path.name}'s att "
                        f"has {n_classes} columns: take both from the same xlsa17 dataset folder")
    return names


def _loc_array(loc, key, path):
    """A 1-based row-index array as int64, checked to be >= 1."""
    rows = _int_array(np.asarray(loc).ravel(), key, path)
    if rows.size == 0 or rows.min() < 1:
        raise UserError(f"{path}: {key} must hold 1-based image row indices (found "
                        f"{'none' if rows.size == 0 else rows.min()}): the file is not an xlsa17 split file")
    return rows


# --------------------------------------------------------------------------- GAZSL


def convert_gazsl(src_dir, out, *, split="easy", tfidf=None, feat_train=None, feat_test=None, overwrite=False):
    """Convert a GAZSL data folder (CUB2011 or NABird) into `out`, for the SCS (`easy`) or SCE (`hard`) split.

    Seen classes = `train_cid`, unseen = `test_cid` of the split file (1-based class ids, which
    become the class ids). A seen class gets the rows of the training features whose label
    (a 0-based position into `train_cid`) points to it; an unseen class likewise from the test
    features and `test_cid`. Each class has one text vector: its row of the TF-IDF
    `PredicateMatrix`. File names default to GAZSL's; `tfidf`, `feat_train` and `feat_test`
    name other files in `src_dir`. Returns the output folder; raises UserError naming the file at
    fault and writes nothing.
    """
    src, out = Path(src_dir), Path(out)
    _check_out(out, overwrite)
    if split not in ("easy", "hard"):
        raise UserError(f"unknown --split {split!r} for gazsl: use easy (SCS) or hard (SCE)")
    bird = next((b for b, names in _GAZSL_NAMES.items()
                 if os.path.lexists(src / names["split"].format(split=split))), None)  # whatever it is
    if bird is None:
        expected = " or ".join(names["split"].format(split=split) for names in _GAZSL_NAMES.values())
        raise UserError(f"{src}: no {expected} here: give the GAZSL data folder (CUB2011 or NABird) as SRC_DIR")
    names = _GAZSL_NAMES[bird]
    sources = []

    split_path = src / names["split"].format(split=split)
    cids = _load_mat(split_path, ["train_cid", "test_cid"])
    sources.append(split_path)
    train_cid = _int_array(np.asarray(cids["train_cid"]).ravel(), "train_cid", split_path)
    test_cid = _int_array(np.asarray(cids["test_cid"]).ravel(), "test_cid", split_path)
    for key, cid in (("train_cid", train_cid), ("test_cid", test_cid)):
        if cid.size == 0 or cid.min() < 1 or np.unique(cid).size != cid.size:
            raise UserError(f"{split_path}: {key} must list distinct 1-based class ids")
    overlap = np.intersect1d(train_cid, test_cid)
    if overlap.size:
        raise UserError(f"{split_path}: classes {_short(overlap.tolist())} are in both train_cid and test_cid; "
                        "the class splits must not overlap")
    n_classes = train_cid.size + test_cid.size
    if max(train_cid.max(), test_cid.max()) > n_classes:
        raise UserError(f"{split_path}: class ids go up to {max(train_cid.max(), test_cid.max())} but the split "
                        f"has {n_classes} classes (ids 1..{n_classes}): is it a GAZSL split file?")

    tfidf_path = _gazsl_tfidf_path(src, tfidf, names["tfidf"])
    matrix = _load_mat(tfidf_path, ["PredicateMatrix"])["PredicateMatrix"]
    sources.append(tfidf_path)
    if matrix.ndim != 2 or matrix.shape[0] != n_classes:
        raise UserError(f"{tfidf_path}: PredicateMatrix has shape {matrix.shape} but {split_path.name} names "
                        f"{n_classes} classes (one row per class): give this dataset's TF-IDF file with --tfidf")
    # A sparse TF-IDF stays sparse (row slicing wants CSR); each class's row is densified on its own.
    if scipy.sparse.issparse(matrix):
        matrix = scipy.sparse.csr_matrix(matrix)
    else:
        matrix = _matrix(matrix, "PredicateMatrix", tfidf_path)

    image, feat_names = {}, {}
    for part, cid, override in (("train", train_cid, feat_train), ("test", test_cid, feat_test)):
        labels_path = src / _GAZSL_LABELS[split].format(part=part)
        labels = _gazsl_labels(load_pickle(labels_path), labels_path)
        sources.append(labels_path)
        cid_key = f"{part}_cid"
        if labels.size == 0 or labels.min() < 0 or labels.max() >= cid.size:
            raise UserError(f"{labels_path}: labels must be 0-based positions into {cid_key} (0..{cid.size - 1}) "
                            f"but run from {labels.min() if labels.size else '-'} to "
                            f"{labels.max() if labels.size else '-'}: is it the label file of this split?")
        empty = sorted(set(cid.tolist()) - set(cid[np.unique(labels)].tolist()))
        if empty:
            raise UserError(f"{labels_path}: classes {_short(empty)} of {cid_key} have no images; every class "
                            "needs at least one: is it the label file of this split?")
        feat_path = src / (override or names["feat"][split].format(part=part))
        features = _load_features(feat_path)
        sources.append(feat_path)
        feat_names[f"feat_{part}"] = feat_path.name
        if features.shape[0] != labels.size:
            raise UserError(f"{feat_path}: {features.shape[0]} feature rows but {labels_path.name} has "
                            f"{labels.size} labels (one row per image): take both from the same split")
        for position, rows in _rows_by_class(labels, np.arange(labels.size)).items():
            image[int(cid[position])] = _take_rows(features, rows, "features", feat_path)
        del features

    text = {c: _take_rows(matrix, [c - 1], "PredicateMatrix", tfidf_path) for c in image}
    del matrix
    options = {"split": split, "dataset": bird, "tfidf": tfidf_path.name, **feat_names}
    return _finish(out, "gazsl", options, sources, image, text,
                   sorted(train_cid.tolist()), sorted(test_cid.tolist()), {}, overwrite)


def _gazsl_labels(raw, path):
    """A GAZSL label file's labels as int64: a numeric array, or a flat list of numbers (anything else,
    ragged or nested lists included, is refused before numpy would expand it)."""
    values = raw.ravel() if isinstance(raw, np.ndarray) and raw.dtype.kind in "fiub" else _numeric_vector(raw)
    if values is None:
        raise UserError(f"{path}: labels must be a flat list or array of integers, found {brief(raw)}: "
                        "is it a GAZSL label file?")
    return _int_array(values, "labels", path)


def _gazsl_tfidf_path(src, tfidf, defaults):
    if tfidf:
        return src / tfidf
    for name in defaults:
        if os.path.lexists(src / name):  # a FIFO or folder there is named as what it is when read
            return src / name
    raise UserError(f"{src}: no TF-IDF file ({' or '.join(defaults)}): put GAZSL's TF-IDF matrix there "
                    "or name it with --tfidf FILE")


def _load_features(path):
    """GAZSL image features: `pfc_feat` (images x dims), or the file's single variable."""
    _need_file(path, "GAZSL's image features go there (or name the file with --feat_train / --feat_test)")
    keys = [name for name, _, _ in _whosmat(path)]
    key = "pfc_feat" if "pfc_feat" in keys else (keys[0] if len(keys) == 1 else None)
    if key is None:
        raise UserError(f"{path}: no pfc_feat variable and not a single one to take (found {keys}): "
                        "save the image features as pfc_feat (images x dims)")
    return _matrix(_load_mat(path, [key])[key], key, path)


# --------------------------------------------------------------------------- Wikipedia


def convert_wikipedia(src_dir, out, *, text="lda", seen=None, split_seed=None, n_seen=None, overwrite=False):
    """Convert the SVCL Wikipedia release (raw_features.mat + the two list files) into `out`.

    Train and test items are pooled; item i's image vector joins its category's image list and
    its text vector (10-d LDA topics with `text="lda"`, 1000-d TF-IDF with `text="tfidf"`) its
    category's text list, in file order (train then test). Class id = category (1..10). Seen
    classes are `seen`, or `n_seen` (default 5) categories drawn with `split_seed` (default 0);
    the rest are unseen. Returns the output folder; raises UserError and writes nothing on error.
    """
    src, out = Path(src_dir), Path(out)
    _check_out(out, overwrite)
    if text not in _WIKI_TEXT_KEYS:
        raise UserError(f"unknown --text {text!r} for wikipedia: use lda or tfidf")
    if seen is not None and (split_seed is not None or n_seen is not None):
        raise UserError("give either --seen or --split_seed/--n_seen for wikipedia, not both")
    if split_seed is not None and not 0 <= split_seed < 2**63:
        raise UserError(f"--split_seed {brief(split_seed)}: must be an integer from 0 to 2**63-1")

    mat_path = src / "raw_features.mat"
    text_keys = _WIKI_TEXT_KEYS[text]
    mat = _load_mat(mat_path, ["I_tr", "I_te", *text_keys])
    sources = [mat_path]
    categories = []
    for image_key, text_key, list_name in zip(("I_tr", "I_te"), text_keys, _WIKI_LISTS):
        list_path = src / list_name
        cats = _read_wiki_list(list_path)
        sources.append(list_path)
        images = _matrix(mat[image_key], image_key, mat_path)
        texts = _matrix(mat[text_key], text_key, mat_path)
        if images.shape[0] != cats.size or texts.shape[0] != cats.size:
            raise UserError(f"{mat_path}: {image_key} has {images.shape[0]} rows and {text_key} {texts.shape[0]} "
                            f"but {list_name} has {cats.size} lines (one per item): take them from one release")
        categories.append(cats)
    for train_key, test_key in (("I_tr", "I_te"), text_keys):
        if mat[train_key].shape[1] != mat[test_key].shape[1]:
            raise UserError(f"{mat_path}: {train_key} and {test_key} differ in dimension: take them from one release")
    images = np.concatenate([mat["I_tr"], mat["I_te"]])
    texts = np.concatenate([mat[k] for k in text_keys])
    del mat
    categories = np.concatenate(categories)
    classes = sorted(np.unique(categories).tolist())

    if seen is None:
        split_seed = 0 if split_seed is None else split_seed
        n_seen = 5 if n_seen is None else n_seen
        if not 0 < n_seen < len(classes):
            raise UserError(f"--n_seen {n_seen}: must be between 1 and {len(classes) - 1} ({len(classes)} classes)")
        seen = np.random.default_rng(split_seed).choice(classes, size=n_seen, replace=False).tolist()
    seen = sorted(int(c) for c in seen)
    unknown = sorted(set(seen) - set(classes))
    if unknown or len(set(seen)) != len(seen):
        raise UserError(f"--seen {','.join(map(str, seen))}: classes must be distinct ids among "
                        f"{classes} (the categories of {_WIKI_LISTS[0]} / {_WIKI_LISTS[1]})")
    unseen = [c for c in classes if c not in seen]
    if not seen or not unseen:
        raise UserError(f"--seen must name at least one of the {len(classes)} classes and leave one unseen")

    rows_by_class = _rows_by_class(categories, np.arange(categories.size))
    image = {c: _take_rows(images, rows, "I_tr/I_te", mat_path) for c, rows in rows_by_class.items()}
    text_lists = {c: _take_rows(texts, rows, "/".join(text_keys), mat_path) for c, rows in rows_by_class.items()}
    options = {"text": text, "seen": seen if split_seed is None else None,
               "split_seed": split_seed, "n_seen": n_seen}
    extra = {}
    if classes == list(range(1, len(_WIKI_NAMES) + 1)):
        extra = {"class_names": {str(c): _WIKI_NAMES[c - 1] for c in classes},
                 "class_names_note": "the usual names of the SVCL Wikipedia categories 1..10, not checked against "
                                     "a names file (the release has none)"}
    return _finish(out, "wikipedia", options, sources, image, text_lists, seen, unseen, extra, overwrite)


def _read_wiki_list(path):
    """Categories (int) of a `text_id <tab> image_id <tab> category` list file, in line order."""
    _need_file(path, "the SVCL Wikipedia release has it beside raw_features.mat")
    cats = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            try:
                if len(fields) != 3:
                    raise ValueError
                cats.append(int(fields[2]))
            except ValueError:
                raise UserError(f"{path}: line {number} is not 'text_id<TAB>image_id<TAB>category'") from None
            if not 1 <= cats[-1] <= MAX_CLASS_ID:
                raise UserError(f"{path}: line {number}: category {brief(cats[-1])} is out of range "
                                f"(ids from 1 to {MAX_CLASS_ID})")
    if not cats:
        raise UserError(f"{path}: the list is empty")
    return np.asarray(cats, dtype=np.int64)


# --------------------------------------------------------------------------- shared


def _check_out(out, overwrite):
    if out.exists() and not (overwrite and out.is_dir()):
        raise UserError(f"{out} already exists: choose another --out"
                        + ("" if out.is_file() else ", or pass --overwrite to replace it"))


def _whosmat(path):
    _need_file(path, "put the release's file there under this name")
    try:
        return scipy.io.whosmat(str(path))
    except NotImplementedError:
        raise UserError(f"{path}: a MATLAB v7.3 (HDF5) file, which cannot be read here: re-save it in "
                        "MATLAB with save(..., '-v7')") from None
    except Exception as err:
        raise UserError(f"{path}: not a readable .mat file ({type(err).__name__}: {err}): "
                        "replace it with a fresh copy") from None


def _need_file(path, hint):
    """A UserError unless `path` is a regular file: "no such file" when missing, else what is there."""
    problem = not_a_file(path)
    if problem == "missing":
        raise UserError(f"{path}: no such file: {hint}")
    if problem:
        raise UserError(f"{path}: {problem}: {hint}")


def _load_mat(path, keys, optional=()):
    """The named variables of a .mat file; UserError naming the file for a missing file or key."""
    present = {name for name, _, _ in _whosmat(path)}
    missing = [key for key in keys if key not in present]
    if missing:
        raise UserError(f"{path}: no variable {', '.join(missing)} (it has {', '.join(sorted(present)) or 'none'}): "
                        "is it the right file of the release?")
    try:
        return scipy.io.loadmat(str(path), variable_names=list(keys) + [k for k in optional if k in present])
    except Exception as err:
        raise UserError(f"{path}: cannot read ({type(err).__name__}: {err}): replace it with a fresh copy") from None


def _matrix(value, key, path):
    """A 2-D real numeric array."""
    if scipy.sparse.issparse(value):
        value = value.toarray()
    if not (isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind in "fiub" and value.size):
        shape = getattr(value, "shape", None)
        raise UserError(f"{path}: {key} must be a non-empty 2-D numeric matrix, found shape {shape}")
    return value


def _int_array(values, key, path):
    values = np.asarray(values)
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise UserError(f"{path}: {key} must hold integers, found {values.dtype}")
    return values.astype(np.int64)


def _rows_by_class(labels, rows):
    """{class id (int): the entries of `rows` whose label is that class}, keeping file order."""
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    return {int(c): rows[group] for c, group in zip(classes, np.split(order, starts[1:]))}


def _take_rows(matrix, rows, key, path):
    """Rows `rows` of a dense or sparse matrix as a dense float32 copy, checked to be finite."""
    block = matrix[rows]
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, refused below
        block = np.asarray(block.toarray() if scipy.sparse.issparse(block) else block, dtype=np.float32)
    if not np.isfinite(block).all():
        raise UserError(f"{path}: {key} has NaN or infinite values (or values too large for float32): "
                        "recompute the features or replace the file")
    return block


def _short(ids, limit=10):
    ids = list(ids)
    return str(ids) if len(ids) <= limit else f"{ids[:limit]} and {len(ids) - limit} more"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _meta(converter, options, sources, image, text, seen, unseen, extra):
    per_split = {}
    for split, ids in (("seen", seen), ("unseen", unseen)):
        per_split[split] = {"classes": len(ids), "images": sum(len(image[c]) for c in ids),
                            "texts": sum(len(text[c]) for c in ids)}
    some = seen[0]
    scaling = recommend_scaling(image, text)
    return {
        "converter": converter,
        "options": options,
        "sources": [{"file": p.name, "sha256": _sha256(p)} for p in sources],
        "seen": list(seen),
        "unseen": list(unseen),
        "image_dim": int(image[some].shape[1]),
        "text_dim": int(text[some].shape[1]),
        "counts": per_split,
        "images_per_class": {str(c): len(image[c]) for c in sorted(image)},
        "texts_per_class": {str(c): len(text[c]) for c in sorted(text)},
        "recommended_input_scaling": scaling,
        "recommended_input_scaling_why": SCALING_REASONS[scaling],
        **extra,
    }


def _finish(out, converter, options, sources, image, text, seen, unseen, extra, overwrite):
    """Write the folder with its meta.json as one atomic replacement of `out` (see `write_dataset`)."""
    meta = _meta(converter, options, sources, image, text, seen, unseen, extra)
    write_dataset(out, image, text, seen, unseen, extra_files={META_FILE: json.dumps(meta, indent=2) + "\n"})
    return out
