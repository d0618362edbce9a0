"""Pinned versions: requirements.txt applies constraints.txt, which pins every package it installs at the
versions this environment has, and the package's own dependencies agree with requirements.txt."""

import importlib.metadata
import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from zscrgan.provenance import RECORDED_PACKAGES

ROOT = Path(__file__).resolve().parents[1]


def _lines(name):
    return [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()
            if line.split("#")[0].strip()]


def _pins():
    pins = {}
    for line in _lines("constraints.txt"):
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
        pins[canonicalize_name(name)] = version
    return pins


def test_requirements_apply_the_constraints_which_pin_every_direct_dependency():
    lines = _lines("requirements.txt")
    assert "-c constraints.txt" in lines
    pins = _pins()
    direct = [Requirement(line) for line in lines if not line.startswith("-")]
    for req in direct:
        assert canonicalize_name(req.name) in pins, req.name
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), (req, pins[canonicalize_name(req.name)])
    for name in RECORDED_PACKAGES:  # what a run records is pinned too
        assert canonicalize_name(name) in pins, name


def test_the_pins_are_the_installed_versions():
    for name, version in _pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (e.g. a platform-specific dependency)
        assert installed == version, name


def test_package_dependencies_are_requirements_runtime_part():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {canonicalize_name(Requirement(line).name): str(Requirement(line).specifier)
                for line in _lines("requirements.txt") if not line.startswith("-")}
    for line in project["dependencies"] + project["optional-dependencies"]["study"]:
        req = Requirement(line)
        assert required.get(canonicalize_name(req.name)) == str(req.specifier), line
