"""Layered configuration: defaults < configs/<DATASET>.yaml < a user's file < command-line flags.

Every key the model reads is in `configs/default.yaml`; that file is also the schema. A key that is
not there, or a value whose type differs from the default's, stops the run with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from easydict import EasyDict

from zscrgan.errors import UserError, brief
from zscrgan.files import not_a_file



def shipped_dir(name: str) -> Path:
    """A folder of files shipped with zscrgan (configs/, studies/): inside the installed package, else at the
    checkout's top level."""
    here = Path(__file__).resolve().parent
    installed = here / name
    return installed if installed.is_dir() else here.parent / name


def find_shipped(name: str | Path, folder: Path, flag: str) -> Path:
    """The YAML file `name`: a path when one exists there, else the file of that name (`.yaml` optional,
    subfolders allowed) shipped in `folder`; a UserError naming `flag` and the shipped names otherwise."""
    path = Path(name)
    if os.path.lexists(path):
        return path
    shipped = folder / (path if path.suffix == ".yaml" else path.with_name(f"{path.name}.yaml"))
    if not path.is_absolute() and shipped.resolve().is_relative_to(folder.resolve()) and shipped.is_file():
        return shipped
    names = sorted(str(f.relative_to(folder).with_suffix("")) for f in folder.rglob("*.yaml"))
    raise UserError(f"{flag} {name}: no such file, nor one of the names shipped with zscrgan ({', '.join(names)})")


CONFIG_DIR = shipped_dir("configs")
DEFAULT_FILE = CONFIG_DIR / "default.yaml"
METHOD_DIR = CONFIG_DIR / "methods"  # <method>.yaml: a method's own keys (a section named after it) and defaults
PROFILE_DIR = CONFIG_DIR / "profiles"  # <name>.yaml: named sets of keys beyond the released model (--profile)


def method_file(method: str) -> Path:
    return METHOD_DIR / f"{method}.yaml"


def method_names() -> tuple[str, ...]:
    """The methods a run can train: one config file each under configs/methods/ (zscrgan first)."""
    names = sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))
    return tuple(sorted(names, key=lambda n: n != "zscrgan"))

# Keys whose value must be one of a fixed set (the first entry is the released behaviour).
CHOICES = {
    "method": method_names(),
    "protocol": ("released", "validated"),
    "query_protocol": ("per_text", "per_class"),
    "input_scaling": ("none", "l2_sqrt_dim", "seen_rms"),
    "divergence": ("released", "kl"),
    "triplet": ("batch_mean", "per_sample"),
    "wrong_class": ("shift", "distinct", "random", "similar_text", "kmeans"),
    "training": ("em", "joint"),
    "train_texts": ("first", "all"),
    "retrieval_space": ("csem", "generator"),
    "query_noise": ("sampled", "mean"),
    "precision": ("float32", "mixed_bfloat16", "mixed_float16"),
    "device": ("auto", "cpu", "gpu"),
}


def _method_choices() -> dict:
    """Each method file's `choices:` mapping, as CHOICES entries for its own dotted keys."""
    out = {}
    for method in CHOICES["method"]:
        try:
            given = yaml.safe_load(method_file(method).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # reading the file for a run reports it
        for key, options in (given.get("choices") or {}).items():
            out[f"{method}.{key}"] = tuple(options)
    return out


CHOICES.update(_method_choices())
# Keys that must be strictly positive; the rest of the numeric keys must be non-negative.
POSITIVE = {"batch_size", "gf_dim", "df_dim", "embed_dim", "z_dim", "top_k", "eval_draws",
            "e_step_iters", "m_step_iters", "critic_steps", "kmeans_clusters"}

# Limits that turn a mistyped number into one clear line instead of a hang, an overflow in training
# or an exhausted memory (docs/configuration.md, "Limits").
MAX_INT = 2**31 - 1          # any integer key
MAX_FLOAT = 1e6              # any float key (learning rates, coefficients, clip_val, noise levels); finite
MAX_PHASE_ROWS = 2**24       # batch rows one phase's schedule holds: iterations x steps each x batch_size
MAX_EVAL_DRAWS = 1000
MAX_WEIGHTS = 2**28          # weights of the four networks (26.7 million at the released CUB sizes)
MAX_DEMO_VALUES = 2**28      # feature values of the synthetic demo dataset
MAX_CONFIG_BYTES = 1 << 20   # a config file


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (never constructs Python objects) that also refuses a key given twice in one
    mapping, which PyYAML would otherwise resolve silently to the last value."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {brief(key_node.value)} is given twice", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)

# Numbers as YAML 1.2 and Python write them: PyYAML follows YAML 1.1, whose floats need a dot and a signed
# exponent, so it reads `1e-3`, `1E3`, `-2e5` and `-.5` as strings. This resolver, tried after YAML 1.1's
# own int and float patterns, reads any decimal with a dot or an exponent (underscores between digits
# allowed, as in `1_000.5`) as a float; integers such as `1_000` are YAML 1.1 ints already.
_FLOAT = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
                              |[0-9][0-9_]*\.[0-9_]*
                              |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?)$""", re.X)
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping (safe loader: never constructs Python objects; a repeated key is refused)."""
    problem = not_a_file(path)
    if problem == "missing":
        raise UserError(f"{path}: config file not found")
    if problem:
        raise UserError(f"{path}: {problem}; a config file is a YAML text file")
    try:
        if Path(path).stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MB; a config file is a short YAML text file")
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}: {brief(getattr(e, 'problem', None) or e)}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); a config file is a YAML text file") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply; a config file is a flat mapping of key: value") from None
    except ValueError as e:  # an integer of over 4300 digits, a malformed date
        raise UserError(f"{path}: not valid YAML: {brief(str(e).split(';')[0])}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of key: value, got {type(data).__name__}")
    return data


def _check_value(key: str, value: Any, default: Any, source: str) -> Any:
    """Return `value` coerced to the default's type, or raise naming the key and the source."""
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise UserError(f"{source}: key '{key}' must be {want.__name__} (like its default {default!r}), "
                        f"got {brief(value)}")
    if key in CHOICES and value not in CHOICES[key]:
        raise UserError(f"{source}: key '{key}' must be one of {', '.join(CHOICES[key])}, got {brief(value)}")
    if want is float and not (math.isfinite(value) and abs(value) <= MAX_FLOAT):
        raise UserError(f"{source}: key '{key}' must be a finite number of at most {MAX_FLOAT:g}, got {brief(value)}")
    if want is int and value > MAX_INT:
        raise UserError(f"{source}: key '{key}' must be at most {MAX_INT}, got {brief(value)}")
    if want in (int, float) and not isinstance(value, bool):
        if value < 0 or (key in POSITIVE and value == 0):
            bound = "> 0" if key in POSITIVE else ">= 0"
            raise UserError(f"{source}: key '{key}' must be {bound}, got {brief(value)}")
    return value


def merge(base: dict, override: Mapping, source: str, prefix: str = "") -> dict:
    """Return `base` updated by `override`, refusing keys that `base` lacks and values of another type."""
    out = dict(base)
    for key, value in override.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise UserError(f"{source}: unknown config key {brief(name)} (known keys: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise UserError(f"{source}: key '{name}' must be a mapping")
            out[key] = merge(base[key], value, source, prefix=f"{name}.")
        else:
            out[key] = _check_value(name, value, base[key], source)
    return out


def parse_flag_value(text: str) -> Any:
    """A command-line value is read as a YAML scalar, so `--mm_reg_coeff 1` and `--r_hinge true` work."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except (yaml.YAMLError, RecursionError, ValueError):  # ValueError: an integer of over 4300 digits
        return text


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*)(#\s?(?P<comment>.*))?$")
_CONTINUED = re.compile(r"^ +#\s?(?P<comment>.*)$")


def all_key_meanings() -> dict[str, str]:
    """`key_meanings` of configs/default.yaml and of every method's file (its own keys, dotted)."""
    out = key_meanings()
    for method in CHOICES["method"]:
        out.update({k: v for k, v in key_meanings(method_file(method)).items() if k.startswith(f"{method}.")})
    return out


def key_meanings(path: Path = DEFAULT_FILE) -> dict[str, str]:
    """Each key's meaning, from its trailing `# comment` in a config file; nested keys get dotted names.

    A comment-only line indented past the first column continues the meaning of the key above it.
    """
    meanings: dict[str, str] = {}
    parents: list[tuple[int, str]] = []  # (indent, name) of the mappings enclosing the current line
    last = None
    for line in path.read_text(encoding="utf-8").splitlines():
        key, more = _KEY_LINE.match(line), _CONTINUED.match(line)
        if key:
            indent = len(key["indent"])
            while parents and parents[-1][0] >= indent:
                parents.pop()
            last = ".".join([name for _, name in parents[-1:]] + [key["key"]])
            meanings[last] = (key["comment"] or "").strip()
            if not key["value"].strip():  # a mapping: only its keys are config keys
                del meanings[last]
                parents.append((indent, last))
                last = None
        elif more and last is not None:
            meanings[last] = f"{meanings[last]} {more['comment'].strip()}".strip()
        else:
            last = None
    return meanings


def flatten(cfg: Mapping, prefix: str = "") -> dict:
    """Nested keys as dotted names: {'demo': {'seed': 0}} -> {'demo.seed': 0}."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    """Dotted names back to nested mappings: {'demo.seed': 1} -> {'demo': {'seed': 1}}."""
    out: dict = {}
    for name, value in flat.items():
        *parents, key = name.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    return out



def with_method(base: dict, method: str) -> dict:
    """`base` with the method's file layered over it: its own section (named after the method) joins
    the schema with its defaults, and its other keys override the shared defaults."""
    if method not in CHOICES["method"]:
        raise UserError(f"config: key 'method' must be one of {', '.join(CHOICES['method'])}, got {brief(method)}")
    path = method_file(method)
    layer = read_yaml(path)
    layer.pop("choices", None)  # read once, into CHOICES
    own = layer.pop(method, None)
    if own is not None and not isinstance(own, dict):
        raise UserError(f"{path}: '{method}' must be a mapping of the method's own keys")
    out = merge(base, layer, str(path))
    if own:
        out[method] = dict(own)
    out["method"] = method
    return out


def schema() -> dict:
    """Every key a config can set: the defaults, and each method's own section (for flags and help)."""
    out = read_yaml(DEFAULT_FILE)
    for method in CHOICES["method"]:
        own = read_yaml(method_file(method)).get(method)
        if isinstance(own, dict):
            out[method] = own
    return out


def _chosen_method(layers: list[Mapping]) -> str:
    """The method of the last layer that names one (the default's otherwise)."""
    method = "zscrgan"
    for layer in layers:
        if isinstance(layer, Mapping) and "method" in layer:
            method = layer["method"]
    return method


def load_config(dataset: str, config_file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None, saved: str | Path | None = None,
                recommended: Mapping[str, Any] | None = None, recommended_source: str = "dataset",
                profile: str | Path | None = None) -> EasyDict:
    """Resolve the configuration for `dataset`; `overrides` are command-line values (already parsed).

    Layers, each over the one before: configs/default.yaml, configs/methods/<method>.yaml (the method
    any layer chooses), what the dataset folder recommends (`recommended`, from `recommended_source`),
    configs/<dataset>.yaml, `profile` (a file of configs/profiles/), `config_file`, `overrides`. `saved` is
    a run's resolved config (when resuming): it replaces the dataset, profile and user files.
    """
    if saved is not None:
        resolved = read_yaml(Path(saved))
        resolved.pop("dataset", None)
        files = [(resolved, str(saved))]
    else:
        files = []
        dataset_file = CONFIG_DIR / f"{dataset}.yaml"
        if dataset_file.exists():
            files.append((read_yaml(dataset_file), str(dataset_file)))
        if profile is not None:
            files.append((read_yaml(Path(profile)), str(profile)))
        if config_file is not None:
            files.append((read_yaml(Path(config_file)), str(config_file)))
    layers = [layer for layer, _ in files] + [overrides or {}]
    method = _chosen_method(layers)
    if not isinstance(method, str):
        raise UserError(f"config: key 'method' must be one of {', '.join(CHOICES['method'])}, got {brief(method)}")
    cfg = with_method(read_yaml(DEFAULT_FILE), method)
    if recommended and saved is None:
        cfg = merge(cfg, recommended, recommended_source)
    for layer, source in files:
        cfg = merge(cfg, _other_methods_refused(layer, method, source), source)
    if overrides:
        cfg = merge(cfg, _other_methods_refused(overrides, method, "command line"), "command line")
    if not 0.0 < cfg["val_fraction"] < 1.0:
        raise UserError(f"config: key 'val_fraction' must be between 0 and 1, got {cfg['val_fraction']!r}")
    _check_limits(cfg)
    cfg["dataset"] = dataset
    return EasyDict(cfg)


def _other_methods_refused(layer: Mapping, method: str, source: str) -> Mapping:
    """`layer`, unless it sets another method's own keys (they would do nothing)."""
    for other in CHOICES["method"]:
        if other != method and other in layer:
            raise UserError(f"{source}: the '{other}.*' keys apply to method {other}; this config's method is {method}")
    return layer


def load_run_config(run_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> EasyDict:
    """The resolved config of a run folder (its config.yaml) with `overrides`; one clear error when the
    file is missing, not a regular file, or not a run's config (it must name its dataset)."""
    saved = Path(run_dir) / "config.yaml"
    if not_a_file(saved) == "missing":
        raise UserError(f"{saved}: not found; give the folder of a training run")
    given = read_yaml(saved)
    dataset = given.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise UserError(f"{saved}: not a run's config ('dataset' is {brief(dataset)}, not a dataset name); "
                        "the run folder is damaged")
    return load_config(dataset, overrides=overrides, saved=saved)


def _check_limits(cfg: Mapping) -> None:
    """Refuse sizes whose work or memory no run could afford (the limits above)."""
    e_rows = cfg["e_step_iters"] * (cfg["critic_steps"] + 1) * cfg["batch_size"]
    m_rows = cfg["m_step_iters"] * cfg["batch_size"]
    if max(e_rows, m_rows) > MAX_PHASE_ROWS:
        raise UserError(f"config: a phase of e_step_iters x (critic_steps + 1) x batch_size = {e_rows} (E-step) or "
                        f"m_step_iters x batch_size = {m_rows} (M-step) batch rows is over the limit of "
                        f"{MAX_PHASE_ROWS} (the released schedule has 19200); lower e_step_iters, m_step_iters "
                        "or batch_size")
    if cfg["eval_draws"] > MAX_EVAL_DRAWS:
        raise UserError(f"config: key 'eval_draws' must be at most {MAX_EVAL_DRAWS}, got {cfg['eval_draws']}")
    d = cfg["demo"]
    values = (d["n_classes"] * (d["images_per_class"] * (1 + d["image_count_spread"]) * d["image_dim"]
                                + d["texts_per_class"] * d["text_dim"]))
    if values > MAX_DEMO_VALUES:
        raise UserError(f"config: the demo dataset would hold about {values:.3g} feature values, over the limit "
                        f"of {MAX_DEMO_VALUES}; lower demo.n_classes, demo.images_per_class or the dimensions")
    if cfg["demo"]["latent_dim"] * cfg["demo"]["hidden_dim"] > MAX_WEIGHTS:
        raise UserError("config: demo.latent_dim x demo.hidden_dim is over the weight limit; lower them")


def check_model_size(cfg: Mapping, image_dim: int, text_dim: int) -> None:
    """Refuse network sizes (with the data's dimensions) whose weights would exceed MAX_WEIGHTS."""
    e, z, g, d = cfg["embed_dim"], cfg["z_dim"], cfg["gf_dim"], cfg["df_dim"]
    # The dense layers' fan-in x fan-out (zscrgan.networks), summed; biases are small beside them.
    weights = (text_dim * 2 * e + (e + z) * g + g * 2 * g + 2 * g * image_dim
               + (image_dim + text_dim) * d + d + image_dim * e)
    if weights > MAX_WEIGHTS:
        raise UserError(f"config: gf_dim {g}, df_dim {d}, embed_dim {e}, z_dim {z} with {image_dim}-d images and "
                        f"{text_dim}-d text make about {weights:.3g} weights, over the limit of {MAX_WEIGHTS}; "
                        "lower the network sizes")
    # Activations of one iteration's stacked critic pass (correct and wrong halves), kept for its
    # gradients: a lower bound of what a batch takes, against the memory free on this machine.
    rows = cfg["batch_size"] * (cfg["critic_steps"] + 1)
    needed = rows * 2 * (2 * image_dim + text_dim + 3 * e + z + 3 * g + d) * 4 * 2
    free = available_memory()
    if free is not None and needed > free:
        raise UserError(f"config: batch_size {cfg['batch_size']} with critic_steps {cfg['critic_steps']} needs at "
                        f"least {needed / 2**30:.3g} GiB for one iteration, more than the {free / 2**30:.3g} GiB "
                        "of memory free here; lower batch_size or the network sizes")


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def to_plain(cfg: Mapping) -> dict:
    """The config as plain dicts, for saving next to a run's outputs."""
    return {k: to_plain(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}


def config_hash(cfg: Mapping, ignore: tuple = ("seed",)) -> str:
    """A short hash of the resolved config without `ignore`d keys: equal exactly when the configs are.

    Runs that differ only by seed share it, so it names a configuration in folder names and groups
    runs in reports.
    """
    plain = {k: v for k, v in to_plain(cfg).items() if k not in ignore}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:8]
