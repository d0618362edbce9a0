"""The command line: subcommands, --print_config, and the installed `zscrgan` command from any folder."""

import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from zscrgan.cli import main, train_main
from zscrgan.config import CONFIG_DIR, DEFAULT_FILE, flatten, key_meanings, load_config, read_yaml, to_plain
from zscrgan.data.demo import DemoSpec, ensure_demo
from test_report import fake_run

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


def _help_entries(capsys, argv) -> dict:
    """{key: (meaning, default shown, source shown)} of `train --help` with `argv`."""
    with pytest.raises(SystemExit) as exit_:
        train_main([*argv, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    text = text[text.index("config keys ("):]  # the options' help, past the usage lines
    entries = {}
    for key in flatten(read_yaml(DEFAULT_FILE)):
        entry = re.search(rf"--{re.escape(key)} (\S+) ((?:(?! --).)*?)\[default: ([^\],]*), from ([^\]]*)\]", text)
        assert entry, key
        entries[key] = (entry[2].strip(), entry[3], entry[4])
    assert "--input_scaling {none,l2_sqrt_dim,seen_rms}" in text and "--r_hinge {true,false}" in text
    return entries


def test_help_lists_every_config_key_with_its_meaning_and_the_default_a_run_would_use(capsys):
    meanings = key_meanings()
    resolved = flatten(to_plain(load_config("DEMO")))  # no --dataset: the demo
    demo_file = read_yaml(CONFIG_DIR / "DEMO.yaml")
    for key, (meaning, shown, source) in _help_entries(capsys, []).items():
        value = resolved[key]
        assert shown == (str(value).lower() if isinstance(value, bool) else str(value)), key
        assert source == ("configs/DEMO.yaml" if key in demo_file else "configs/default.yaml"), key
        assert meanings[key] and " ".join(meanings[key].split()) == meaning, key
    assert _help_entries(capsys, [])["gf_dim"][1:] == ("256", "configs/DEMO.yaml")


def test_help_shows_the_defaults_of_the_given_dataset_and_config(tmp_path, monkeypatch, capsys):
    entries = _help_entries(capsys, ["--dataset", "CUB", "--config", "demo_cub_sizes"])
    assert entries["gf_dim"][1:] == ("2048", "configs/demo_cub_sizes.yaml")
    assert entries["e_step_iters"][1:] == ("100", "configs/default.yaml")
    monkeypatch.chdir(tmp_path)  # a short path: argparse wraps long ones
    Path("mine.yaml").write_text("gf_dim: 64\nCSEM_lr: 1e-3\n")
    entries = _help_entries(capsys, ["--dataset", "WIKI", "--config", "mine.yaml"])
    assert entries["gf_dim"][1:] == ("64", "mine.yaml") and entries["CSEM_lr"][1:] == ("0.001", "mine.yaml")
    assert entries["input_scaling"][1:] == ("l2_sqrt_dim", "configs/WIKI.yaml")


def test_config_is_found_by_name_or_path(tmp_path, capsys):
    assert train_main(["--dataset", "CUB", "--config", "demo_cub_sizes", "--print_config"]) == 0
    by_name = yaml.safe_load(capsys.readouterr().out)
    assert by_name == to_plain(load_config("CUB", CONFIG_DIR / "demo_cub_sizes.yaml"))
    assert train_main(["--dataset", "CUB", "--config", str(CONFIG_DIR / "demo_cub_sizes.yaml"), "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == by_name
    for argv in (["--config", "no_such_config"], ["--config", "no_such_config", "--help"]):
        assert train_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --config no_such_config: no such file") and "demo_cub_sizes" in err
        assert len(err.splitlines()) == 1


def test_numbers_in_any_form_as_flags(capsys):
    assert train_main(["--print_config", "--clip_val=-2e5"]) == 2  # must be >= 0: the value was read as a number
    assert "'clip_val' must be >= 0, got -200000.0" in capsys.readouterr().err
    assert train_main(["--print_config", "--CSEM_lr", "1E-3", "--mm_reg_coeff", ".5", "--rounds", "1_000"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["CSEM_lr"], printed["mm_reg_coeff"], printed["rounds"]) == (1e-3, 0.5, 1000)


@pytest.mark.parametrize("argv, abbreviated", [
    (["train", "--mm_reg", "3"], "--mm_reg"), (["train", "--print_conf"], "--print_conf"),
    (["report", "r", "--pl", "x"], "--pl"), (["inspect", "d", "--hel"], "--hel"),
    (["convert", "wikipedia", "src", "--out", "o", "--split_s", "1"], "--split_s"),
    (["baseline", "d", "--alph", "1"], "--alph"), (["study", "demo", "--report"], "--report"),
    (["retrieve", "run", "--queries", "q", "--gallery", "g", "--out", "o", "--top", "3"], "--top")])
def test_abbreviated_flags_are_refused_in_one_line(argv, abbreviated, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"unrecognized arguments: {abbreviated}" in err, err


def test_key_meanings_read_trailing_and_continued_comments(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("# header\na: 1   # first\n     # continued\n\nb: x\nnest:\n  c: 2.0  # inner\n# section\nd: 0 # last\n")
    assert key_meanings(f) == {"a": "first continued", "b": "", "nest.c": "inner", "d": "last"}


def test_nested_keys_are_flags(tmp_path, capsys):
    assert train_main(["--print_config", "--demo.seed", "3", "--demo.text_noise", "2"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["demo"] == {**read_yaml(DEFAULT_FILE)["demo"], "seed": 3, "text_noise": 2.0}
    assert train_main(["--print_config", "--demo.seed", "x"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: command line: key 'demo.seed' must be int (like its default 0), got 'x'"


def test_tools_that_do_not_train_never_import_tensorflow(tmp_path):
    demo = tmp_path / "DEMO"
    ensure_demo(demo, DemoSpec(n_classes=6, n_seen=4, images_per_class=8, image_dim=8, text_dim=4))
    run = fake_run(tmp_path / "run", 0, [0.2, 0.3])
    calls = [["--help"], ["train", "--help"], ["train", "--print_config"], ["inspect", str(demo)],
             ["baseline", str(demo), "--top_k", "5"], ["report", str(run), "--plot", str(tmp_path / "p.png")],
             ["convert", "wikipedia", str(tmp_path / "absent"), "--out", str(tmp_path / "W")]]
    script = f"""
import json, sys
from zscrgan.cli import main
for argv in {calls!r}:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    print(json.dumps([argv[0] if argv[0] != "train" else " ".join(argv[:2]), rc, "tensorflow" in sys.modules]))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("[")]
    assert [r[0] for r in results] == ["--help", "train --help", "train --print_config", "inspect", "baseline",
                                       "report", "convert"], p.stderr
    assert [r[1] for r in results] == [0, 0, 0, 0, 0, 0, 2]  # convert: the source folder is absent
    assert [r[0] for r in results if r[2]] == []  # none imported TensorFlow


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
    for folder in ("zscrgan", "configs", "studies"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / file, src / file)
    (src / "configs" / "profiles").mkdir(exist_ok=True)  # configs in a subfolder are shipped too
    (src / "configs" / "profiles" / "tiny_test.yaml").write_text("gf_dim: 16\n")
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

    # Shipped configs and study files by name, from a folder that has none.
    for name, gf_dim in (("demo_cub_sizes", 2048), ("profiles/tiny_test", 16)):
        p = run("train", "--print_config", "--dataset", "CUB", "--config", name)
        assert p.returncode == 0 and yaml.safe_load(p.stdout)["gf_dim"] == gf_dim, p.stderr
    p = run("train", "--help", "--config", "demo_cub_sizes")
    assert p.returncode == 0 and "from configs/demo_cub_sizes.yaml" in p.stdout, p.stderr
    p = run("study", "demo", "--report_only", "--output_dir", "study", "--data_root", "data")
    assert p.returncode == 0 and (elsewhere / "study" / "results.md").is_file(), p.stderr
    assert read_yaml(elsewhere / "study" / "study.yaml") == read_yaml(ROOT / "studies" / "demo.yaml")
    # Without Ray (the `study` extra not installed): one line saying what to install, exit 2, nothing written.
    hidden = "import sys; sys.modules['ray'] = sys.modules['optuna'] = None; from zscrgan.cli import main; "
    for argv in (["study", "demo", "--output_dir", "s2"], ["study", "demo", "--search", "optuna"]):
        p = subprocess.run([str(python), "-c", f"{hidden}sys.exit(main({argv!r}))"], capture_output=True, text=True,
                           cwd=elsewhere, env=env, timeout=120)
        assert p.returncode == 2 and p.stdout == "", p.stderr
        assert len(p.stderr.splitlines()) == 1 and "pip install 'zscrgan[study]'" in p.stderr, p.stderr
    assert sorted(os.listdir(elsewhere)) == ["data", "study"]


def test_data_root_comes_from_the_environment_unless_a_flag_gives_it(tmp_path, monkeypatch, capsys):
    # A dataset folder whose meta.json recommends a scaling shows where the run looked for it.
    for root in ("env_root", "flag_root"):
        (tmp_path / root / "X").mkdir(parents=True)
    (tmp_path / "env_root" / "X" / "meta.json").write_text(json.dumps({"recommended_input_scaling": "seen_rms"}))
    (tmp_path / "flag_root" / "X" / "meta.json").write_text(json.dumps({"recommended_input_scaling": "l2_sqrt_dim"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSCRGAN_DATA_ROOT", str(tmp_path / "env_root"))
    assert train_main(["--dataset", "X", "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["input_scaling"] == "seen_rms"
    assert train_main(["--dataset", "X", "--print_config", "--data_root", "flag_root"]) == 0  # relative to here
    assert yaml.safe_load(capsys.readouterr().out)["input_scaling"] == "l2_sqrt_dim"


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_a_data_command_names_itself_as_typed(command, capsys):
    """`python -m zscrgan convert --help` (or the `zscrgan` script) shows `zscrgan convert` in its usage,
    not the module that implements it."""
    from zscrgan.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: zscrgan {command} ")
