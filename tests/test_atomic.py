"""Atomic writes leave the old content or the complete new one, and no debris."""

import os

import pytest

from zscrgan.atomic import atomic_file, clear_stale_staging, retired_name, staged_folder, write_text_atomic


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


def _killed_mid_write(folder, retire=False):
    """A process that dies by SIGKILL inside `staged_folder(folder)` (after moving the old folder aside
    when `retire`), as a kill during a dataset or demo write does."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from zscrgan.atomic import retired_name, staged_folder
        folder = Path({str(folder)!r})
        with staged_folder(folder) as staging:
            (staging / "half").write_text("half")
            if {retire!r}:
                os.rename(folder, retired_name(folder))
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == -9


def test_what_a_killed_folder_write_left_is_cleared_by_the_next_write(tmp_path):
    folder = tmp_path / "DEMO"
    with staged_folder(folder) as s:
        (s / "one").write_text("1")
    _killed_mid_write(folder)
    assert len(os.listdir(tmp_path)) == 2  # the folder and the dead writer's staging folder
    clear_stale_staging(folder)
    assert os.listdir(tmp_path) == ["DEMO"] and os.listdir(folder) == ["one"]
    # Killed between moving the old folder aside and moving the new one in: the old one comes back.
    _killed_mid_write(folder, retire=True)
    assert not folder.exists()
    with staged_folder(tmp_path / "other"):
        pass
    clear_stale_staging(folder)
    assert sorted(os.listdir(tmp_path)) == ["DEMO", "other"] and os.listdir(folder) == ["one"]


def test_another_writers_staging_folder_in_progress_is_left_alone(tmp_path):
    folder = tmp_path / "DEMO"
    with staged_folder(folder) as s:
        (s / "one").write_text("1")
        clear_stale_staging(folder)  # as a second process would, while this write is in progress
        assert s.is_dir() and (s / "one").is_file()
    assert os.listdir(tmp_path) == ["DEMO"]


def test_a_killed_demo_write_leaves_nothing_once_the_demo_is_made_again(tmp_path):
    from zscrgan.data.demo import DemoSpec, ensure_demo

    spec = DemoSpec(n_classes=4, n_seen=3, images_per_class=2, texts_per_class=1, image_dim=5, text_dim=3)
    ensure_demo(tmp_path / "DEMO", spec)
    _killed_mid_write(tmp_path / "DEMO")
    ensure_demo(tmp_path / "DEMO", spec)  # the demo is complete: only the debris is cleared
    assert os.listdir(tmp_path) == ["DEMO"]
