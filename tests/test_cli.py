"""The command line: subcommands, --print_config, and the installed `zscrgan` command from any folder."""

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from zscrgan.cli import main, train_main
from zscrgan.config import load_config, to_plain

ROOT = Path(__file__).resolve().parents[1]


def test_print_config_prints_the_resolved_config_and_exits(tmp_path, capsys):
    user = tmp_path / "my.yaml"
    user.write_text("mm_reg_coeff: 1.5\n")
    assert train_main(["--dataset", "WIKI", "--config", str(user), "--rounds", "7", "--print_config",
                       "--output_dir", str(tmp_path / "run")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = to_plain(load_config("WIKI", user, {"rounds": 7}))
    assert printed == expected
    assert printed["rounds"] == 7 and printed["mm_reg_coeff"] == 1.5 and printed["input_scaling"] == "l2_sqrt_dim"
    assert not (tmp_path / "run").exists()


def test_subcommands_dispatch_and_absent_ones_say_so(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("train", "report", "convert", "inspect", "baseline", "study", "retrieve"):
        assert f"  {name} " in listed
    assert main([]) == 2
    assert main(["nonsense"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: nonsense: unknown command")
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--help"])
    assert exit_.value.code == 0 and "--plot" in capsys.readouterr().out


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def test_pip_install_gives_a_zscrgan_command_that_works_from_any_folder(tmp_path):
    for needed in ("pip", "setuptools"):  # found, not imported: importing setuptools here would patch distutils
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed: it is needed to build and install the package offline")
    # A copy of the project, so building leaves nothing in the checkout.
    src = tmp_path / "src"
    for folder in ("zscrgan", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / file, src / file)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = _venv_python(venv)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The new environment sees this one's packages (dependencies, pip, setuptools): no download needed.
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "_zscrgan_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    str(src)], check=True, cwd=tmp_path, env=env, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    zscrgan = python.parent / "zscrgan"

    def run(*args):
        return subprocess.run([str(zscrgan), *args], capture_output=True, text=True, cwd=elsewhere, env=env,
                              timeout=120)

    p = run("--help")
    assert p.returncode == 0 and "train" in p.stdout and "baseline" in p.stdout, p.stderr
    p = run("train", "--print_config", "--dataset", "WIKI")
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout) == to_plain(load_config("WIKI"))  # configs shipped inside the package
    where = subprocess.run([str(python), "-c", "import zscrgan.config as c; print(c.DEFAULT_FILE)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
    assert sorted(os.listdir(elsewhere)) == []  # help and --print_config write nothing
