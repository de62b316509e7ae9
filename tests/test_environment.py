"""environment.yml (for conda users) must install exactly what pyproject.toml declares.

Rule: every dependency of pyproject (project.dependencies + the dev extra) appears by name under pip in
environment.yml with the same specifier, or with an exact ``==`` pin that satisfies pyproject's range
(torch); environment.yml installs the package itself with ``-e .[dev]`` and nothing else.
"""

import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pgolf.core.paths import REPO_ROOT


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _environment_pip_lines() -> list[str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    return pip_sections[0]


def test_environment_installs_the_package_last():
    assert _environment_pip_lines()[-1] == "-e .[dev]"


def test_environment_lists_every_pyproject_dependency_with_a_compatible_pin():
    declared = _pyproject_requirements()
    listed = {canonicalize_name(r.name): r for r in map(Requirement, _environment_pip_lines()[:-1])}
    assert set(listed) == set(declared), f"only in environment.yml: {set(listed) - set(declared)}, " \
                                         f"only in pyproject: {set(declared) - set(listed)}"
    for name, req in listed.items():
        if req.specifier == declared[name].specifier:
            continue
        pins = [s for s in req.specifier if s.operator == "=="]
        assert len(pins) == 1 and len(req.specifier) == 1, f"{name}: {req.specifier} differs from pyproject"
        assert declared[name].specifier.contains(pins[0].version), \
            f"{name}=={pins[0].version} is outside pyproject's {declared[name].specifier}"
