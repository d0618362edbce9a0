"""A gallery embedded once and searched many times (the shape of faiss `write_index` / `read_index`).

An index is a folder:

    embeddings.npy   float32 [G, E]: the gallery's rows in the run's common space, unit-normalised
                     (a dot product is the cosine), read memory-mapped
    ids.npy          [G]: each row's id (the user's `--ids`, or the row numbers 0..G-1)
    index.json       what made it: the run (folder, method, a fingerprint of its selected weights),
                     the gallery file (path, rows, size, mtime, sha256) and the embedding dimension

The folder is written through a staging folder and appears complete or not at all. Searching an
index gives bit for bit the scores and rows that embedding the gallery again gives (same chunk size).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zscrgan import __version__
from zscrgan.atomic import staged_folder
from zscrgan.errors import UserError
from zscrgan.search import GALLERY_CHUNK, unit_chunks

EMBEDDINGS, IDS, META = "embeddings.npy", "ids.npy", "index.json"


@dataclass
class GalleryIndex:
    """An opened index: `embeddings` [G, E] unit rows (memory-mapped), `ids` [G], `meta` (index.json)."""

    folder: Path
    embeddings: np.ndarray
    ids: np.ndarray
    meta: dict

    @classmethod
    def open(cls, folder) -> "GalleryIndex":
        """The index in `folder`; one UserError naming the folder if it is not a complete index."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            embeddings = np.load(folder / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
            ids = np.load(folder / IDS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"{folder}: not a gallery index written by `zscrgan retrieve --save_index` "
                            f"({type(e).__name__}: {e})") from None
        if (not isinstance(meta, dict) or embeddings.ndim != 2 or ids.shape != embeddings.shape[:1]
                or embeddings.shape[1] != meta.get("embed_dim")):
            raise UserError(f"{folder}: the index's files do not agree ({EMBEDDINGS} {embeddings.shape}, "
                            f"{IDS} {ids.shape}); build it again with --save_index")
        return cls(folder, embeddings, ids, meta)


def file_record(path) -> dict:
    """Path, size, mtime and sha256 of a file: what tells whether a gallery file is still the indexed one."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest()}


def check_ids(ids, n_rows: int, where: str = "--ids") -> np.ndarray:
    """`ids` as a 1-D array of one id per gallery row (numbers or strings, never objects)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iufUS" or ids.shape != (n_rows,):
        raise UserError(f"{where}: must be a 1-D array of {n_rows} numbers or strings (one per gallery row), "
                        f"got {ids.dtype} of shape {ids.shape}")
    return ids


def build_index(folder, gallery, embed, run: dict, gallery_file: dict | None = None, ids=None,
                chunk_rows: int = GALLERY_CHUNK, gallery_name: str = "gallery") -> GalleryIndex:
    """Embed `gallery` [G, D] chunk by chunk with `embed` and write the index into `folder`.

    `run` identifies the model (index.json's "run"); `gallery_file` is `file_record` of the gallery's
    file, if it has one; `ids` one id per row (default: the row numbers). Memory holds one chunk:
    the embeddings go straight into a memory-mapped file. Returns the opened index. An existing index
    in `folder` is replaced; anything else there is refused (UserError), never deleted.
    """
    n_rows = int(gallery.shape[0])
    ids = np.arange(n_rows, dtype=np.int64) if ids is None else check_ids(ids, n_rows)
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and ((folder / META).is_file() or not any(folder.iterdir()))):
        raise UserError(f"{folder}: exists and is not a gallery index (which would be replaced); give a new folder")
    with staged_folder(folder) as staging:
        out = None
        for start, n, unit in unit_chunks(gallery, embed, chunk_rows, gallery_name):
            if out is None:
                out = np.lib.format.open_memmap(staging / EMBEDDINGS, "w+", np.float32, (n_rows, unit.shape[1]))
            out[start:start + n] = unit.numpy()[:n]
        out.flush()
        embed_dim = int(out.shape[1])
        del out
        np.save(staging / IDS, ids)
        meta = {"run": run, "gallery": gallery_file or {"rows": n_rows}, "rows": n_rows, "embed_dim": embed_dim,
                "chunk_rows": int(chunk_rows), "zscrgan": __version__}
        (staging / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for name in (EMBEDDINGS, IDS, META):  # on disk before the folder is renamed into place
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
    return GalleryIndex.open(folder)
