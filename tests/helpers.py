"""Test helpers shared across test files: where the real data lives, and a converted Wikipedia folder."""

from pathlib import Path

import pytest

from zscrgan.data.convert import convert_wikipedia

# The `shared` folder of reference data sits beside this repository's root; CI and developers get it
# there. The real data is never copied into the project.
SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_DATA = SHARED / "real_data"


def require_real_data(*parts) -> Path:
    """The path REAL_DATA/parts, or skip the test when it is not there."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        where = "/".join(("../shared/real_data",) + parts)
        pytest.skip(f"{where} not present: this test needs the real data in the shared folder "
                    "beside the repository root")
    return path


def make_wiki_folder(tmp_path, text="lda", seen=(2, 3, 5, 9, 10)) -> Path:
    """Convert the real Wikipedia release into a dataset folder under `tmp_path` and return it.

    Skips the test when the real data is absent. `text` is "lda" (10-d) or "tfidf" (1000-d).
    """
    src = require_real_data("wikipedia_svcl")
    return convert_wikipedia(src, Path(tmp_path) / f"WIKI_{text}", text=text, seen=list(seen))


def tree_digest(folder) -> dict:
    """Every path under `folder` with a digest of its content, "dir" for a folder and "special" for a
    link, FIFO or device: equal before and after a command exactly when it changed nothing there."""
    import hashlib

    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            out[str(p)] = "special"
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "dir"
    return out
