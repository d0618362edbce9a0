"""Pinned versions: requirements.txt applies constraints.txt, which pins every package it installs at the
versions this environment has, and the package's own dependencies agree with requirements.txt (training)
and requirements-study.txt (the `study` extra); requirements-dev.txt adds the tests' tools to both."""

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


def _direct(name):
    return [Requirement(line) for line in _lines(name) if not line.startswith("-")]


def test_requirements_apply_the_constraints_which_pin_every_direct_dependency():
    assert "-c constraints.txt" in _lines("requirements.txt")
    assert "-r requirements.txt" in _lines("requirements-study.txt")  # so the constraints apply to each
    assert "-r requirements-study.txt" in _lines("requirements-dev.txt")
    pins = _pins()
    direct = _direct("requirements.txt") + _direct("requirements-study.txt") + _direct("requirements-dev.txt")
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


def test_package_dependencies_are_requirements_txt_and_the_study_extra_requirements_study_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for listed, file in ((project["dependencies"], "requirements.txt"),
                         (project["optional-dependencies"]["study"], "requirements-study.txt")):
        assert sorted(map(str, map(Requirement, listed))) == sorted(map(str, _direct(file))), file


def test_training_installs_neither_ray_nor_optuna_nor_the_test_tools():
    names = {canonicalize_name(req.name) for req in _direct("requirements.txt")}
    assert names.isdisjoint({"ray", "optuna", "pytest", "pytrec-eval-terrier"})
