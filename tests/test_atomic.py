"""Atomic writes leave the old content or the complete new one, and no debris."""

import os

import pytest

from zscrgan.atomic import atomic_file, retired_name, staged_folder, write_text_atomic


def test_failed_file_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(path, "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["summary.json"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["summary.json"]


def test_new_file_gets_the_usual_permissions(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_staged_folder_replaces_as_a_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "ckpt"
    with staged_folder(folder) as s:
        (s / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with staged_folder(folder) as s:
            (s / "two").write_text("2")
            raise RuntimeError("crash while building")
    assert sorted(os.listdir(folder)) == ["one"] and os.listdir(tmp_path) == ["ckpt"]
    with staged_folder(folder) as s:
        (s / "two").write_text("2")
    assert sorted(os.listdir(folder)) == ["two"] and os.listdir(tmp_path) == ["ckpt"]
    assert not retired_name(folder).exists()
