"""Hostile input, generated here: malformed dataset files, configs, flags, folders and run folders.

Every case must end the command with exit status 2 and one line `error: ...` on stderr (no traceback:
main returns instead of raising), within seconds, without writing anything. Cases cover what a user
(or an attacker) can hand the command: files of the wrong kind (FIFO, device, directory, link loop),
truncated or code-running pickles, self-similar values whose full repr would never finish, YAML alias
bombs and deep nesting, numbers that overflow or schedules that never end, and corrupt run folders.
"""

import faulthandler
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import zscrgan.run  # noqa: F401  (imports TensorFlow here, so that no case's time includes it)
from helpers import tree_digest
from main import main

FILES = ("image_embed_dict.pkl", "txt_embed_dict.pkl", "trainids.pkl", "testids.pkl")
# A hang would take minutes; a refusal takes well under a second (the limit allows for a loaded machine).
SECONDS = 30


def vecs(n=3, d=4, value=1.0):
    return [np.full(d, value, np.float32) for _ in range(n)]


def good_dataset():
    return {"image_embed_dict.pkl": {1: vecs(), 2: vecs(), 3: vecs()},
            "txt_embed_dict.pkl": {1: vecs(2, 5), 2: vecs(2, 5), 3: vecs(2, 5)},
            "trainids.pkl": [1, 2], "testids.pkl": [3]}


def shared_refs(depth=60):
    """A list of 2**depth leaves in a few hundred bytes: every level holds the level below twice."""
    x = [np.float32(1)]
    for _ in range(depth):
        x = [x, x]
    return x


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def nested_list_pickle(depth):
    """Protocol-2 bytes of a list nested `depth` deep (pickle.dumps would recurse too deep to write it)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


# --- dataset cases: name -> (file, content); content is an object to pickle, raw bytes, or a maker
def _files_of_wrong_kind():
    def fifo(p):
        os.mkfifo(p)

    def loop(p):
        os.symlink(p.with_name(p.name + ".b"), p)
        os.symlink(p, p.with_name(p.name + ".b"))

    makers = {"missing": lambda p: None, "directory": lambda p: p.mkdir(), "fifo": fifo,
              "dev_zero": lambda p: os.symlink("/dev/zero", p), "link_loop": loop,
              "dangling_link": lambda p: os.symlink(p.with_name("nowhere"), p)}
    return {f"{f}:{k}": (f, m) for f in FILES for k, m in makers.items()}


def _bad_pickles():
    good = pickle.dumps(good_dataset()["image_embed_dict.pkl"], protocol=2)
    contents = {
        "empty_file": b"", "truncated": good[:len(good) // 2], "garbage": b"\x00\xffnot a pickle",
        "code": Evil(), "text_not_pickle": b"hello: world\n", "none": None, "set": {1, 2},
        "shared_refs": shared_refs(), "nested_100000": nested_list_pickle(100000),
        "string": "abc", "number": 7,
    }
    return {f"{f}:{k}": (f, c) for f in FILES for k, c in contents.items()}


def _bad_contents():
    ids = {
        "id_1e30": [10**30], "id_negative": [-4], "id_digits_5000": ["9" * 5000], "id_float": [1.5],
        "id_bool": [True], "id_uint64_max": [np.uint64(2**64 - 1)], "ids_repeated": [1, 1],
        "ids_empty": [], "id_shared_refs": shared_refs(), "ids_dict": {1: 2},
    }
    cases = {f"trainids.pkl:{k}": ("trainids.pkl", v) for k, v in ids.items()}
    cases["testids.pkl:id_1e30"] = ("testids.pkl", [10**30])
    cases["testids.pkl:overlap"] = ("testids.pkl", [2, 3])
    img = good_dataset()["image_embed_dict.pkl"]
    vectors = {
        "bytearray": [bytearray(b"\x01\x02\x03\x04")] * 3, "bytes": [b"\x01\x02\x03\x04"] * 3,
        "strings": ["1 2 3 4"] * 3, "nested_2d": [[[1.0, 2.0], [3.0, 4.0]]] * 3,
        "object_array": [np.array([1, "a", None, 2], dtype=object)] * 3, "bool_array": [np.ones(4, bool)] * 3,
        "complex": [np.ones(4, np.complex64)] * 3, "nan": vecs(value=np.nan), "inf": vecs(value=np.inf),
        "overflow_1e39": [[1e39, 1.0, 1.0, 1.0]] * 3, "int_beyond_int64": [[10**30, 1, 1, 1]] * 3,
        "ragged": [np.ones(4, np.float32), np.ones(3, np.float32)], "none_vectors": [None] * 3,
        "empty_list": [], "dict_value": {"a": 1}, "scalar": 1.0, "shared_refs": shared_refs(),
        "other_dim": vecs(d=6), "zero_length_vectors": [np.zeros(0, np.float32)] * 3,
    }
    for k, v in vectors.items():
        cases[f"image_embed_dict.pkl:class2_{k}"] = ("image_embed_dict.pkl", {**img, 2: v})
    cases["image_embed_dict.pkl:class_missing"] = ("image_embed_dict.pkl", {1: vecs(), 3: vecs()})
    cases["image_embed_dict.pkl:key_1e30"] = ("image_embed_dict.pkl", {**img, 10**30: vecs()})
    cases["image_embed_dict.pkl:key_shared_refs"] = ("image_embed_dict.pkl", {**img, "x" * 10**6: vecs()})
    cases["image_embed_dict.pkl:two_keys_one_class"] = ("image_embed_dict.pkl", {**img, "2": vecs()})
    # 65536-d images: the released networks would need ~310 million weights (TensorFlow runs out of memory).
    cases["image_embed_dict.pkl:dim_65536"] = ("image_embed_dict.pkl", {c: vecs(1, 65536) for c in (1, 2, 3)})
    text = good_dataset()["txt_embed_dict.pkl"]
    cases["txt_embed_dict.pkl:class3_no_texts"] = ("txt_embed_dict.pkl", {**text, 3: []})
    cases["txt_embed_dict.pkl:class1_bytearray"] = ("txt_embed_dict.pkl", {**text, 1: [bytearray(5)] * 2})
    return cases


DATASET_CASES = {**_files_of_wrong_kind(), **_bad_pickles(), **_bad_contents()}


# --- config and flag cases: name -> (flags, config file content or None) -------------------------------
ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                       + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                          for p, c in zip("abcdefgh", "bcdefghi")] + ["gf_dim: *i"]) + "\n"


def _config_cases():
    cases = {}
    for key in ("CSEM_lr", "generator_lr", "discriminator_lr", "clip_val", "kl_div_coefficient", "mm_reg_coeff"):
        for label, value in (("nan", ".nan"), ("inf", ".inf"), ("neg_inf", "-.inf"), ("3e38", "3.0e+38"),
                             ("negative", "-1.0"), ("text", "abc")):
            cases[f"flag_{key}_{label}"] = ([f"--{key}={value}"], None)
    for key, value in (("e_step_iters", "1000000000"), ("m_step_iters", "1000000000"), ("batch_size", "10000000"),
                       ("critic_steps", "100000000"), ("gf_dim", "10000000000"), ("seed", str(10**30)),
                       ("eval_draws", "1000000"), ("top_k", "0"), ("rounds", "-1"), ("protocol", "bogus"),
                       ("input_scaling", "[1, 2]"), ("val_fraction", "1.5"), ("r_hinge", "maybe")):
        cases[f"flag_{key}_{value[:12]}"] = ([f"--{key}", value], None)
    for value in ("nan", "inf", "-1", "0"):
        cases[f"time_budget_{value}"] = (["--time_budget", value], None)
    cases["seed_with_seeds"] = (["--seed", "1", "--seeds", "0", "1"], None)
    cases["dataset_with_resume"] = (["--dataset", "CUB", "--resume", "{tmp}/somerun"], None)
    cases["resume_and_evaluate"] = (["--resume", "{tmp}/a", "--evaluate", "{tmp}/a"], None)
    cases["resume_no_run"] = (["--resume", "{tmp}/norun"], None)
    cases["output_dir_is_file"] = (["--output_dir", "{tmp}/afile"], None)
    cases["output_dir_under_file"] = (["--output_dir", "{tmp}/afile/run"], None)
    cases["results_root_is_file"] = (["--results_root", "{tmp}/afile"], None)
    cases["data_root_is_file"] = (["--data_root", "{tmp}/afile"], None)
    files = {
        "alias_bomb": ALIAS_BOMB, "deep_20000": "a: " + "[" * 20000 + "]" * 20000 + "\n",
        "deep_mapping": "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 3000)),
        "duplicate_key": "gf_dim: 256\ngf_dim: 512\n", "unknown_key": "gf_dimm: 256\n",
        "huge_key": "k" * 100000 + ": 1\n", "top_level_list": "- 1\n- 2\n", "invalid_yaml": "a: [1, 2\n",
        "tabs": "a:\n\t- b\n", "demo_scalar": "demo: 3\n", "demo_too_big": "demo:\n  n_classes: 1000000000\n",
        "demo_unknown": "demo:\n  colour: red\n", "python_object": "a: !!python/object/apply:os.system [ls]\n",
        "float_as_text": "CSEM_lr: fast\n", "nan_lr": "generator_lr: .nan\n", "huge_value": "clip_val: 1e300\n",
        "shared_value": "x: &x [1, 2, 3]\ntop_k: *x\n",
    }
    for name, text in files.items():
        cases[f"config_{name}"] = (["--config", "{config}"], text.encode())
    cases["config_binary"] = (["--config", "{config}"], bytes(range(256)) * 4)
    cases["config_not_utf8"] = (["--config", "{config}"], "gf_dim: 256 # caf\u00e9\n".encode("latin-1"))
    cases["config_too_large"] = (["--config", "{config}"], b"# " + b"x" * (2 << 20) + b"\n")
    for kind in ("directory", "fifo", "dev_zero", "link_loop", "missing"):
        cases[f"config_{kind}"] = (["--config", "{config}"], kind)
    return cases


CONFIG_CASES = _config_cases()


def _make_special(path: Path, kind: str) -> None:
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "link_loop":
        os.symlink(path.with_name("loop.b"), path)
        os.symlink(path, path.with_name("loop.b"))


def _expect_one_line_refusal(capsys, tmp_path, args):
    before = tree_digest(tmp_path)
    faulthandler.dump_traceback_later(300, exit=True, file=sys.__stderr__)  # a hang ends the tests, with a traceback
    t0 = time.monotonic()
    try:
        rc = main(args)
    finally:
        faulthandler.cancel_dump_traceback_later()
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 2100, err
    assert "Traceback" not in err[0]
    assert seconds < SECONDS
    assert tree_digest(tmp_path) == before  # nothing written (nor removed)
    return err[0]


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_dataset_file(case, tmp_path, capsys):
    name, content = DATASET_CASES[case]
    folder = tmp_path / "datasets" / "BAD"
    folder.mkdir(parents=True)
    for file, obj in good_dataset().items():
        target = folder / file
        if file != name:
            target.write_bytes(pickle.dumps(obj, protocol=2))
        elif callable(content) and not isinstance(content, type):
            content(target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_bytes(pickle.dumps(content, protocol=2))
    line = _expect_one_line_refusal(capsys, tmp_path, [
        "--dataset", "BAD", "--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "res"),
        "--output_dir", str(tmp_path / "run")])
    assert name in line or "weights" in line  # names the file (or, for sizes, what to lower)
    said = {"directory": "a directory", "fifo": "a FIFO", "dev_zero": "a character device",
            "link_loop": "a symbolic link loop", "dangling_link": "a symbolic link to a missing file"}
    kind = case.split(":")[1]
    assert kind not in said or said[kind] in line  # what is there instead of a file


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_or_flags(case, tmp_path, capsys):
    flags, content = CONFIG_CASES[case]
    config = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    elif content is not None and content != "missing":
        _make_special(config, content)
    (tmp_path / "afile").write_text("a file\n")
    flags = [f.format(tmp=tmp_path, config=config) for f in flags]
    defaults = {"--data_root": str(tmp_path / "datasets"), "--results_root": str(tmp_path / "res"),
                "--output_dir": str(tmp_path / "run")}
    extra = [x for k, v in defaults.items() if k not in flags for x in (k, v)]
    if "--resume" in flags or "--evaluate" in flags:
        extra = [x for x in extra if x not in ("--output_dir", str(tmp_path / "run"))][:4]
    _expect_one_line_refusal(capsys, tmp_path, flags + extra)


# --- run folders: corrupt checkpoints and state, resumes that do not fit ----------------------------------
SMALL = ["--gf_dim", "16", "--df_dim", "16", "--embed_dim", "8", "--z_dim", "4", "--batch_size", "4",
         "--e_step_iters", "1", "--m_step_iters", "1", "--rounds", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-round run of tiny networks on a small dataset: its data root and run folder."""
    tmp = tmp_path_factory.mktemp("finished")
    folder = tmp / "datasets" / "SMALL"
    folder.mkdir(parents=True)
    for file, obj in good_dataset().items():
        (folder / file).write_bytes(pickle.dumps(obj, protocol=2))
    assert main(["--dataset", "SMALL", "--data_root", str(tmp / "datasets"), "--results_root", str(tmp / "res"),
                 "--output_dir", str(tmp / "run"), *SMALL]) == 0
    return tmp


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _state_edit(which, edit):
    def apply(run):
        path = run / "checkpoints" / which / "state.json"
        state = json.loads(path.read_text())
        path.write_text(json.dumps(edit(state)))
    return apply


def _without(key):
    return lambda state: {k: v for k, v in state.items() if k != key}


RUN_CASES = {
    "last_data_truncated": (lambda run: _truncate(next((run / "checkpoints" / "last").glob("ckpt.data*"))), []),
    "last_index_garbage": (lambda run: (run / "checkpoints" / "last" / "ckpt.index").write_bytes(b"\x00" * 64), []),
    "last_index_missing": (lambda run: (run / "checkpoints" / "last" / "ckpt.index").unlink(), []),
    "state_garbage": (lambda run: (run / "checkpoints" / "last" / "state.json").write_bytes(b"\xff{{"), []),
    "state_not_object": (lambda run: (run / "checkpoints" / "last" / "state.json").write_text("[1, 2]"), []),
    "state_round_text": (_state_edit("last", lambda s: {**s, "round": "x"}), []),
    "state_best_text": (_state_edit("last", lambda s: {**s, "best": "x"}), []),
    "state_sampler_list": (_state_edit("last", lambda s: {**s, "sampler": [1]}), []),
    "config_garbage": (lambda run: (run / "config.yaml").write_bytes(b"\x00\x01: ["), []),
    "config_deleted": (lambda run: (run / "config.yaml").unlink(), []),
    "other_sizes": (lambda run: None, ["--gf_dim", "32"]),
    "other_batch_size": (lambda run: None, ["--batch_size", "8"]),
    "other_dataset_dims": (lambda run: (run.parent / "datasets" / "SMALL" / "image_embed_dict.pkl").write_bytes(
        pickle.dumps({c: vecs(3, 7) for c in (1, 2, 3)}, protocol=2)), []),
    "other_dataset_name": (_state_edit("last", lambda s: {**s, "data": {**s["data"], "dataset": "CUB"}}), []),
    "evaluate_best_truncated": (lambda run: _truncate(next((run / "checkpoints" / "best").glob("ckpt.data*"))),
                                ["--evaluate"]),
    "evaluate_best_state_garbage": (lambda run: (run / "checkpoints" / "best" / "state.json").write_text("{"),
                                    ["--evaluate"]),
    "evaluate_best_missing": (lambda run: shutil.rmtree(run / "checkpoints" / "best"), ["--evaluate"]),
}
for _key in ("round", "sampler", "best", "last_test"):
    RUN_CASES[f"state_lacks_{_key}"] = (_state_edit("last", _without(_key)), [])


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_folder(case, finished_run, tmp_path, capsys):
    corrupt, flags = RUN_CASES[case]
    shutil.copytree(finished_run / "datasets", tmp_path / "datasets")
    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    corrupt(run)
    mode, rest = (flags[0], flags[1:]) if flags[:1] == ["--evaluate"] else ("--resume", flags)
    line = _expect_one_line_refusal(capsys, tmp_path, [
        mode, str(run), "--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "res"),
        "--rounds", "2", *rest])
    assert str(run) in line or "--" in line
