import argparse

import nbformat
import pytest

from pgolf.research import notebooks
from pgolf.research.notebooks import NotebookParameterError, check_params, notebook_parameters, parse_value

NOTEBOOK = '''# %% tags=["parameters"]
seeds: int = 2  # runs per arm
lr: float = 0.02
arm = "base"
use_qat: bool = False
budget = None
out = str(1 + 1)  # an expression: any value accepted

# %%
print(seeds, lr, arm, use_qat, budget)
'''


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(notebooks, "notebooks_dir", lambda: tmp_path)
    path = tmp_path / "03_params.py"
    path.write_text(NOTEBOOK)
    return path


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    notebooks.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_parameters_cell_is_parsed(notebook):
    defaults = notebook_parameters(notebook)
    assert list(defaults) == ["seeds", "lr", "arm", "use_qat", "budget", "out"]
    assert defaults["lr"] == 0.02 and defaults["out"] is notebooks.NO_DEFAULT


def test_typo_is_rejected_with_a_suggestion_and_the_valid_names(notebook):
    with pytest.raises(NotebookParameterError) as err:
        check_params(notebook, {"sedes": 3})
    message = str(err.value)
    assert "'sedes'" in message and "Did you mean 'seeds'?" in message
    assert "seeds, lr, arm, use_qat, budget, out" in message


@pytest.mark.parametrize("params", [{"seeds": 2.5}, {"seeds": "3"}, {"lr": "fast"}, {"use_qat": 1},
                                    {"seeds": True}, {"arm": 3}])
def test_wrong_type_is_rejected(notebook, params):
    with pytest.raises(NotebookParameterError, match="expects"):
        check_params(notebook, params)


def test_valid_parameters_pass(notebook):
    check_params(notebook, {"seeds": 3, "lr": 1, "arm": "x", "use_qat": True, "budget": 5.0, "out": [1]})


def test_names_resolve_by_number_stem_or_file_name(notebook):
    assert notebooks.resolve_notebook("03") == notebook
    assert notebooks.resolve_notebook("03_params") == notebook
    assert notebooks.resolve_notebook("03_params.py") == notebook
    with pytest.raises(FileNotFoundError, match="03_params"):
        notebooks.resolve_notebook("04")


def test_cli_values_parse_like_papermill():
    assert [parse_value(v) for v in ("3", "0.5", "True", "None", "abc")] == [3, 0.5, True, None, "abc"]


def test_cli_rejects_a_typo_before_starting_a_kernel(notebook, capsys):
    assert _cli("notebooks", "run", "03", "-p", "sedes=3") == 2
    assert "Did you mean 'seeds'?" in capsys.readouterr().err


def test_cli_lists_notebooks_with_their_parameters(notebook, capsys):
    assert _cli("notebooks", "list") == 0
    assert capsys.readouterr().out == "03_params  (seeds, lr, arm, use_qat, budget, out)\n"


def test_cli_runs_with_overrides_and_fails_nonzero(notebook, tmp_path, monkeypatch):
    out_dir = tmp_path / "executed" / "deep"
    assert _cli("notebooks", "run", "03", "-p", "seeds=5", "-p", "arm=7", "--out-dir", str(out_dir)) == 0
    nb = nbformat.read(out_dir / "03_params.ipynb", as_version=4)
    assert nb.cells[-1].outputs[0]["text"] == "5 0.02 7 False None\n"  # "7" stays a str for a str default
    notebook.write_text(NOTEBOOK + '\n# %%\nraise RuntimeError("boom")\n')
    monkeypatch.setenv("PGOLF_OUT", str(tmp_path / "out"))
    assert _cli("notebooks", "run", "03", "--workspace", str(tmp_path / "ws")) == 1
    executed = tmp_path / "ws" / "runs" / "notebooks"  # a scratch workspace: the published root is not written
    assert "boom" in (executed / "03_params.failed.ipynb").read_text()  # beside, never over, a good output
    assert not (executed / "03_params.ipynb").exists()


def test_rerun_with_same_output_keeps_the_file_and_a_change_rewrites_it(notebook, tmp_path, capfd):
    out_dir = tmp_path / "out"
    first = notebooks.run_notebooks([str(notebook)], {}, out_dir=out_dir, log_output=True)[0]
    assert "notebooks: [1/1] 03_params" in capfd.readouterr().out
    before = first.read_bytes()
    notebooks.run_notebook(notebook, {}, out_dir=out_dir)
    assert first.read_bytes() == before  # only papermill/nbclient timestamps differed
    notebooks.run_notebook(notebook, {"seeds": 3}, out_dir=out_dir)
    assert first.read_bytes() != before and "3 0.02 base" in first.read_text()
    assert sorted(p.name for p in out_dir.iterdir()) == ["03_params.ipynb"]  # no temp files left


PLANNING = '''# %% tags=["parameters"]
plan_only: bool = False

# %%
from pgolf.research.launchers import PlanOnly
print("plan: 3 runs to train")
if plan_only:
    raise PlanOnly("stopped after the plan")
print("trained")
'''


def test_plan_only_prints_the_plan_and_writes_no_notebook(notebook, tmp_path, monkeypatch, capsys):
    notebook.write_text(PLANNING)
    monkeypatch.setenv("PGOLF_OUT", str(tmp_path / "out"))
    assert _cli("notebooks", "run", "03", "-p", "plan_only=True", "--quiet") == 0
    out = capsys.readouterr().out
    assert "plan: 3 runs to train" in out and "plan only; nothing trained, no notebook written" in out
    assert "trained\n" not in out.replace("nothing trained", "")
    assert not (tmp_path / "out").exists()  # no executed notebook, no .failed copy
    notebook.write_text(PLANNING.replace("if plan_only:", "if False:"))  # a notebook that ignores plan_only
    assert _cli("notebooks", "run", "03", "-p", "plan_only=True", "--quiet") == 2
    assert "no study stopped at its plan" in capsys.readouterr().err


@pytest.mark.parametrize("raw", ["__import__('os').system('true')", "[1, 2", "{'micro': [0, 1], 'small': range(3)}"])
def test_cli_refuses_code_for_a_list_parameter_naming_it(tmp_path, monkeypatch, capsys, raw):
    """A list/dict parameter takes a Python literal; code or a typo is refused naming the parameter and what
    was expected (before: ast.literal_eval's "malformed node or string" with no name, or a SyntaxError)."""
    monkeypatch.setattr(notebooks, "notebooks_dir", lambda: tmp_path)
    (tmp_path / "04_lists.py").write_text(NOTEBOOK.replace("seeds: int = 2", "seeds: dict = {'micro': [0, 1]}"))
    assert _cli("notebooks", "run", "04", "-p", f"seeds={raw}") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"-p seeds={raw}: expected a Python literal dict like {{'micro': [0, 1]}}" in err
