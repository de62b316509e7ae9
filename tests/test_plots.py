import subprocess
import sys

import matplotlib
import pandas as pd
import pytest

from pgolf.research import plots

FORMATS = ("svg", "pdf", "png")

# Builds the same figure as _figure() below, in a fresh interpreter (new SVG salt, new clock).
FRESH = """
import sys, pandas as pd
from pgolf.research import plots
runs = pd.DataFrame({"arm": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "q_val_bpb": [1.20, 1.22, 1.18, 1.19]})
for fmt in sys.argv[2:]:
    plots.savefig(plots.plot_metric_by_arm(runs), f"{sys.argv[1]}/fig.{fmt}")
"""


def _runs() -> pd.DataFrame:
    return pd.DataFrame({"arm": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                         "q_val_bpb": [1.20, 1.22, 1.18, 1.19]})


def _curves() -> pd.DataFrame:
    rows = [{"arm": arm, "seed": seed, "step": step, "val_bpb": 2.0 - 0.1 * step + 0.01 * seed + bonus}
            for arm, bonus in (("a", 0.0), ("b", -0.05)) for seed in (0, 1) for step in (0, 1, 2)]
    rows.append({"arm": "a", "seed": 0, "step": 1, "train_loss": 3.0})  # a train row, ignored
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", FORMATS)
def test_savefig_is_byte_identical_and_dateless(tmp_path, fmt):
    first = plots.savefig(plots.plot_metric_by_arm(_runs()), tmp_path / f"one.{fmt}").read_bytes()
    second = plots.savefig(plots.plot_metric_by_arm(_runs()), tmp_path / f"two.{fmt}").read_bytes()
    assert first == second
    for leak in (b"CreationDate", b"<dc:date>", b"Producer", b"Software", matplotlib.__version__.encode()):
        assert leak not in first
    assert not list(tmp_path.glob(".*.tmp"))  # written via a temp file, nothing left behind


def test_savefig_is_byte_identical_across_processes(tmp_path):
    expected = {fmt: plots.savefig(plots.plot_metric_by_arm(_runs()), tmp_path / f"here.{fmt}").read_bytes()
                for fmt in FORMATS}
    subprocess.run([sys.executable, "-c", FRESH, str(tmp_path), *FORMATS], check=True)
    for fmt in FORMATS:
        assert (tmp_path / f"fig.{fmt}").read_bytes() == expected[fmt], fmt


def test_curves_one_line_per_arm(tmp_path):
    fig = plots.plot_curves(_curves())
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([1.955, 1.855, 1.755])
    plots.savefig(fig, tmp_path / "curves.svg")


def test_savefig_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unsupported"):
        plots.savefig(plots.plot_metric_by_arm(_runs()), tmp_path / "x.jpg")
