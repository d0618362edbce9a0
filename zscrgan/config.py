"""Layered configuration: defaults < configs/<DATASET>.yaml < a user's file < command-line flags.

Every key the model reads is in `configs/default.yaml`; that file is also the schema. A key that is
not there, or a value whose type differs from the default's, stops the run with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from easydict import EasyDict

from zscrgan.errors import UserError



def _config_dir() -> Path:
    """configs/ shipped inside the installed package, else the checkout's top-level configs/."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return installed if (installed / "default.yaml").is_file() else here.parent / "configs"


CONFIG_DIR = _config_dir()
DEFAULT_FILE = CONFIG_DIR / "default.yaml"

# Keys whose value must be one of a fixed set (the first entry is the released behaviour).
CHOICES = {
    "protocol": ("released", "validated"),
    "input_scaling": ("none", "l2_sqrt_dim", "seen_rms"),
    "divergence": ("released", "kl"),
    "triplet": ("batch_mean", "per_sample"),
    "wrong_class": ("shift", "distinct", "random", "similar_text", "kmeans"),
    "training": ("em", "joint"),
}
# Keys that must be strictly positive; the rest of the numeric keys must be non-negative.
POSITIVE = {"batch_size", "gf_dim", "df_dim", "embed_dim", "z_dim", "top_k", "eval_draws",
            "e_step_iters", "m_step_iters", "critic_steps", "kmeans_clusters"}


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping (safe loader: never constructs Python objects)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
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
                        f"got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise UserError(f"{source}: key '{key}' must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if want in (int, float) and not isinstance(value, bool):
        if value < 0 or (key in POSITIVE and value == 0):
            bound = "> 0" if key in POSITIVE else ">= 0"
            raise UserError(f"{source}: key '{key}' must be {bound}, got {value!r}")
    return value


def merge(base: dict, override: Mapping, source: str, prefix: str = "") -> dict:
    """Return `base` updated by `override`, refusing keys that `base` lacks and values of another type."""
    out = dict(base)
    for key, value in override.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise UserError(f"{source}: unknown config key '{name}' (known keys: {known})")
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
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*)(#\s?(?P<comment>.*))?$")
_CONTINUED = re.compile(r"^ +#\s?(?P<comment>.*)$")


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


def load_config(dataset: str, config_file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None, saved: str | Path | None = None,
                recommended: Mapping[str, Any] | None = None, recommended_source: str = "dataset") -> EasyDict:
    """Resolve the configuration for `dataset`; `overrides` are command-line values (already parsed).

    `saved` is a run's resolved config (when resuming): it replaces the dataset and user files.
    `recommended` holds what the dataset folder itself recommends (from `recommended_source`): it
    applies over the defaults, under every file and flag.
    """
    cfg = read_yaml(DEFAULT_FILE)
    if recommended and saved is None:
        cfg = merge(cfg, recommended, recommended_source)
    if saved is not None:
        resolved = read_yaml(Path(saved))
        resolved.pop("dataset", None)
        cfg = merge(cfg, resolved, str(saved))
    else:
        dataset_file = CONFIG_DIR / f"{dataset}.yaml"
        if dataset_file.exists():
            cfg = merge(cfg, read_yaml(dataset_file), str(dataset_file))
        if config_file is not None:
            cfg = merge(cfg, read_yaml(Path(config_file)), str(config_file))
    if overrides:
        cfg = merge(cfg, overrides, "command line")
    if not 0.0 < cfg["val_fraction"] < 1.0:
        raise UserError(f"config: key 'val_fraction' must be between 0 and 1, got {cfg['val_fraction']!r}")
    cfg["dataset"] = dataset
    return EasyDict(cfg)


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
