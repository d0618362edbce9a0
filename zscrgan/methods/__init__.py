"""Retrieval methods as peers: one module per method in this folder, named as its `method` config key.

Each module defines one subclass of `zscrgan.methods.base.Method` (the contract the run loop, studies,
report, search and diagnosis rely on), and `configs/methods/<name>.yaml` holds its own config keys and
published defaults. Adding a method is one module here plus its config file and tests; nothing else
learns its name.
"""

from __future__ import annotations

import importlib


def method_class(name: str):
    """The Method subclass of the module `zscrgan.methods.<name>`."""
    from zscrgan.methods.base import Method

    module = importlib.import_module(f"zscrgan.methods.{name}")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Method) and obj is not Method
             and obj.__module__ == module.__name__]
    if len(found) != 1:
        raise RuntimeError(f"zscrgan.methods.{name} must define exactly one Method subclass, found {len(found)}")
    return found[0]


def build_method(cfg, image_dim: int, text_dim: int):
    """The method `cfg.method` names, built for data of these dimensions."""
    return method_class(cfg.method)(cfg, image_dim, text_dim)
