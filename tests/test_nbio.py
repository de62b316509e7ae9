import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

NOTEBOOK = '''# %% [markdown]
# A tiny notebook.

# %% tags=["parameters"]
n: int = 2  # how many

# %%
print("n squared is", n * n)
'''


def _execute(tmp_path, source: str, **params):
    src = tmp_path / "01_tiny.py"
    src.write_text(source)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(f"jupytext://{src}", str(out), parameters=params, kernel_name="python3",
                               progress_bar=False)
    return nbformat.read(out, as_version=4)


@pytest.mark.filterwarnings("ignore:.*does not end in one of")
def test_papermill_runs_a_jupytext_notebook_with_injected_parameters(tmp_path):
    nb = _execute(tmp_path, NOTEBOOK, n=7)
    tags = [cell.metadata.get("tags", []) for cell in nb.cells]
    assert ["injected-parameters"] in tags
    assert nb.cells[-1].outputs[0]["text"] == "n squared is 49\n"
    assert nb.metadata.papermill.input_path == f"jupytext://{tmp_path / '01_tiny.py'}"  # a path, not the notebook


@pytest.mark.filterwarnings("ignore:.*does not end in one of")
def test_a_failing_cell_raises(tmp_path):
    with pytest.raises(PapermillExecutionError, match="boom"):
        _execute(tmp_path, NOTEBOOK + '\n# %%\nraise RuntimeError("boom")\n')
    assert "boom" in (tmp_path / "out.ipynb").read_text()  # the error is also in the output
