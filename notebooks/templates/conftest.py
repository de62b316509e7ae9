"""Templates are not tests: a file here named on the pytest command line collects nothing and is never imported
(a notebook template imported as a module would run its study, i.e. train into runs/)."""

from __future__ import annotations

import pytest


class Template(pytest.File):
    def collect(self):
        return []


def pytest_pycollect_makemodule(module_path, parent):
    return Template.from_parent(parent, path=module_path)
