"""papermill IO handler for jupytext notebooks: ``papermill jupytext://notebooks/a.py out.ipynb``.

Registered in pyproject under ``[project.entry-points."papermill.io"]``. Reading through a handler keeps
``metadata.papermill.input_path`` a short string; passing ``jupytext.read(...)`` to papermill directly
would store the whole notebook there.
"""

from __future__ import annotations

import jupytext
import nbformat

SCHEME = "jupytext://"
DEFAULT_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _strip(path: str) -> str:
    return path[len(SCHEME):] if path.startswith(SCHEME) else path


class JupytextHandler:
    """Reads (and writes) any format jupytext knows, chosen by the file extension."""

    @staticmethod
    def read(path: str) -> str:
        nb = jupytext.read(_strip(path))
        # A .py notebook without a jupytext header has no kernelspec, and papermill needs a language.
        nb.metadata.setdefault("kernelspec", DEFAULT_KERNELSPEC)
        nb.metadata.setdefault("language_info", {"name": "python"})
        return nbformat.writes(nb)

    @staticmethod
    def write(buf: str, path: str) -> None:
        jupytext.write(nbformat.reads(buf, as_version=4), _strip(path))

    @staticmethod
    def listdir(path: str) -> list[str]:
        raise NotImplementedError("listdir is not supported for jupytext:// paths")

    @staticmethod
    def pretty_path(path: str) -> str:
        return path
