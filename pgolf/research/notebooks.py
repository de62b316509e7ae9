"""Run the jupytext notebooks (``notebooks/NN_*.py``) headless with papermill, with checked parameters.

    pgolf notebooks list
    pgolf notebooks run 02 -p seeds=3 -p lr=0.02      (into a scratch workspace: pgolf.research.workspace)
    pgolf notebooks run 02 --publish                  (rewrites the published study, on purpose)

papermill injects misspelled parameters without a word, so every key is checked against the assignments
in the notebook's ``parameters``-tagged cell (parsed with ``ast``) and against the type of its default.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from pgolf.core.paths import notebooks_dir, out_root, runs_dir

NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
NO_DEFAULT = object()  # the default is an expression (not a literal), so its type is unknown


class NotebookParameterError(ValueError):
    pass


def list_notebooks() -> list[Path]:
    return sorted(notebooks_dir().glob(NOTEBOOK_GLOB))


def resolve_notebook(name: str | Path) -> Path:
    """A path to a notebook file, or a name in notebooks/: ``02``, ``02_lr_sweep`` or ``02_lr_sweep.py``."""
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.resolve()
    stem = path.name.removesuffix(".py")
    matches = [p for p in list_notebooks() if p.stem == stem or p.stem.startswith(stem + "_")]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in list_notebooks()) or "none"
        what = "ambiguous" if matches else "not found"
        raise FileNotFoundError(f"notebook {name!r} {what} in {notebooks_dir()} (notebooks: {known})")
    return matches[0]


def notebook_parameters(path: Path) -> dict[str, object]:
    """Name -> default of each assignment in the ``parameters`` cell (``NO_DEFAULT`` if not a literal)."""
    import jupytext  # a dev dependency: imported only when notebooks are used

    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        return {}
    defaults: dict[str, object] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    defaults[target.id] = ast.literal_eval(value)
                except ValueError:
                    defaults[target.id] = NO_DEFAULT
    return defaults


def _type_ok(value: object, default: object) -> bool:
    if default is NO_DEFAULT or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_params(path: Path, params: dict) -> None:
    """Raise ``NotebookParameterError`` for an unknown name or a value of the wrong type."""
    defaults = notebook_parameters(path)
    valid = ", ".join(defaults) or "none"
    for key, value in params.items():
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise NotebookParameterError(
                f"{path.name} has no parameter {key!r}.{hint} Valid parameters: {valid}")
        default = defaults[key]
        if not _type_ok(value, default):
            raise NotebookParameterError(
                f"{path.name}: parameter {key!r} expects {type(default).__name__} "
                f"(default {default!r}), got {type(value).__name__} {value!r}")


def run_notebook(name: str | Path, params: dict, out_dir: Path | None = None,
                 kernel: str = "python3", cwd: Path | None = None, log_output: bool = False) -> Path | None:
    """Execute one notebook and return the executed ``.ipynb`` (default ``runs/notebooks/<stem>.ipynb``).

    The kernel's working directory defaults to notebooks/ (as under nbval), never the caller's cwd.
    A failing cell raises papermill's ``PapermillExecutionError``; what ran is kept as
    ``<stem>.failed.ipynb``. An output that differs from the existing one only in execution timestamps
    leaves the existing file untouched. ``log_output`` streams the cells' output (the ablation engine's
    progress lines) to this process's stdout/stderr while the notebook runs. ``plan_only=True`` in ``params``
    runs :func:`run_plan_only` instead (prints the plans, writes nothing, returns None).
    """
    import papermill  # slow import, only when running

    path = resolve_notebook(name)
    check_params(path, params)
    if params.get("plan_only"):
        return run_plan_only(path, params, kernel, cwd)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir() / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{path.stem}.ipynb"
    tmp = out_dir / f".{path.stem}.{os.getpid()}.ipynb"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not end in one of")  # .py input is intended
            papermill.execute_notebook(
                f"jupytext://{path}", str(tmp), parameters=params, kernel_name=kernel,
                cwd=str(cwd or path.parent), progress_bar=False, log_output=log_output,
                stdout_file=sys.stdout if log_output else None, stderr_file=sys.stderr if log_output else None)
        if output.is_file() and same_but_timestamps(tmp, output):
            tmp.unlink()  # a tracked executed notebook is not rewritten for new timestamps alone
        else:
            os.replace(tmp, output)
    finally:
        if tmp.exists():  # a failed cell: keep what ran, beside the previous output
            os.replace(tmp, out_dir / f"{path.stem}.failed.ipynb")
    return output


PLAN_ONLY = "PlanOnly"  # the exception a study raises after printing its plan (pgolf.research.launchers)


def run_plan_only(path: Path, params: dict, kernel: str = "python3", cwd: Path | None = None) -> None:
    """Execute the notebook up to its studies' plans (``plan_only=True``), print them, and write nothing: the
    executed notebook goes to a temp folder and is deleted. Any error but the plan's stop is raised."""
    import tempfile

    import papermill
    from papermill.exceptions import PapermillExecutionError

    with tempfile.TemporaryDirectory(prefix="pgolf-plan-") as tmp:
        out = Path(tmp) / f"{path.stem}.ipynb"
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not end in one of")
                papermill.execute_notebook(f"jupytext://{path}", str(out), parameters=params, kernel_name=kernel,
                                           cwd=str(cwd or path.parent), progress_bar=False)
        except PapermillExecutionError as err:
            if err.ename != PLAN_ONLY:
                raise
        else:
            raise NotebookParameterError(f"{path.name}: plan_only=True but no study stopped at its plan (the notebook "
                                         "ran to the end); does it pass plan_only to its study?")
        for cell in json.loads(out.read_text())["cells"]:
            outputs = cell.get("outputs", [])
            if any(o.get("output_type") == "error" and o.get("ename") == PLAN_ONLY for o in outputs):
                for o in outputs:
                    if o.get("output_type") == "stream":
                        text = o.get("text", "")
                        print("".join(text) if isinstance(text, list) else text, end="", flush=True)
    print(f"{path.stem}: plan only; nothing trained, no notebook written", flush=True)
    return None


VOLATILE_KEYS = ("start_time", "end_time", "duration", "input_path", "output_path")


def _without_timestamps(nb: dict) -> dict:
    """The notebook without what changes on every execution: papermill's times and paths, nbclient's
    ``execution`` timestamps, and the random cell ids jupytext gives a .py notebook on each read."""
    nb = json.loads(json.dumps(nb))
    for cell in nb.get("cells", []):
        cell.pop("id", None)
    for meta in [nb.get("metadata", {})] + [c.get("metadata", {}) for c in nb.get("cells", [])]:
        meta.pop("execution", None)
        for key in VOLATILE_KEYS:
            meta.get("papermill", {}).pop(key, None)
    return nb


def same_but_timestamps(a: Path, b: Path) -> bool:
    return _without_timestamps(json.loads(Path(a).read_text())) == _without_timestamps(json.loads(Path(b).read_text()))


def run_notebooks(names: list[str], params: dict, **kwargs) -> list[Path | None]:
    """Check the parameters of every notebook first, then run them in order."""
    paths = [resolve_notebook(n) for n in names]
    for path in paths:
        check_params(path, params)
    out = []
    t0 = time.perf_counter()
    for i, path in enumerate(paths, 1):
        print(f"notebooks: [{i}/{len(paths)}] {path.stem} (elapsed {time.perf_counter() - t0:.0f}s)", flush=True)
        out.append(run_notebook(path, params, **kwargs))
    return out


# ---- command line -------------------------------------------------------------------------------

def parse_value(raw: str) -> object:
    """Like ``papermill -p``: True/False/None, then int, then float, else the string."""
    if raw in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[raw]
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _cli_params(pairs: list[str], names: list[str]) -> dict:
    defaults: dict[str, object] = {}
    for name in names:
        defaults.update(notebook_parameters(resolve_notebook(name)))
    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise NotebookParameterError(f"expected -p key=value, got {pair!r}")
        default = defaults.get(key)
        if isinstance(default, str):
            params[key] = raw  # a string default keeps "123" a string (papermill's -r)
        elif isinstance(default, (list, tuple, dict)):
            try:
                params[key] = ast.literal_eval(raw)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise NotebookParameterError(
                    f"-p {key}={raw}: expected a Python literal {type(default).__name__} like {default!r} "
                    "(numbers, strings, lists, dicts; no names or calls)") from None
        else:
            params[key] = parse_value(raw)
    return params


def _cmd_list(args: argparse.Namespace) -> int:
    for path in list_notebooks():
        params = ", ".join(notebook_parameters(path))
        print(f"{path.stem}  ({params})" if params else path.stem)
    return 0


def _target(args: argparse.Namespace, params: dict) -> tuple[Path, bool]:
    """The output root the notebooks run against and whether it is a scratch workspace: the published one
    with ``--publish``, else a scratch workspace (made and given the published runs first). A plan writes
    nothing, so without an existing workspace it reads the published runs."""
    from pgolf.research.workspace import prepare_workspace, workspace_path

    published = out_root()
    if args.publish:
        print(f"notebooks: --publish: writing the published study in {published} (runs, analysis tables, executed "
              "notebooks, figures)", flush=True)
        return published, False
    ws = workspace_path(args.workspace)
    if params.get("plan_only") and not ws.is_dir():
        return published, False
    copied = prepare_workspace(ws, published)
    print(f"notebooks: scratch workspace {ws} (the published study in {published} is not changed; "
          f"{copied} published files copied in for reuse; --publish writes there instead)", flush=True)
    return ws, True


def _cmd_run(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    from pgolf.research.workspace import WorkspaceError, output_root

    try:
        params = _cli_params(args.param, args.names)
        for name in args.names:  # a misspelled name or parameter fails before a workspace is made
            check_params(resolve_notebook(name), params)
        root, scratch = _target(args, params)
        with output_root(root):
            out_dir = args.out_dir or runs_dir() / "notebooks"
            outputs = run_notebooks(args.names, params, out_dir=out_dir, kernel=args.kernel,
                                    log_output=not args.quiet)
    except (NotebookParameterError, FileNotFoundError, ValueError, SyntaxError, WorkspaceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PapermillExecutionError as err:
        print(f"notebook failed (the cells that ran are in {out_dir}/<name>.failed.ipynb): {err}", file=sys.stderr)
        return 1
    for output in outputs:
        if output is not None:
            print(output)
    if scratch and any(o is not None for o in outputs):
        print(f"scratch outputs: runs and analysis tables in {root / 'runs'}, figures in {root / 'figures'}; "
              f"this workspace's figures and results table: PGOLF_OUT={root} pgolf figures / pgolf results")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("notebooks", help="list or run the notebooks headless")
    commands = parser.add_subparsers(dest="notebooks_command", required=True)
    run = commands.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("names", nargs="+", help="notebook name, file name or number prefix (02)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter of the notebook's parameters cell")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--publish", action="store_true",
                       help="write the published study (runs/, analysis tables, runs/notebooks/, figures/ of the "
                            "repository or PGOLF_OUT): only on purpose; without it a run goes to a scratch workspace")
    where.add_argument("--workspace", metavar="NAME_OR_PATH", default=None,
                       help="the scratch workspace: a name under $PGOLF_SCRATCH (default ~/.cache/pgolf/scratch) or a "
                            "folder outside the repository; reusing one keeps its runs (default: a new timestamped one)")
    run.add_argument("--out-dir", type=Path, default=None,
                     help="where the executed notebook goes (default: runs/notebooks/ of the workspace, or of the "
                          "published study with --publish)")
    run.add_argument("--kernel", default="python3")
    run.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output (progress) here")
    run.set_defaults(func=_cmd_run)
    commands.add_parser("list", help="list the notebooks and their parameters").set_defaults(func=_cmd_list)
