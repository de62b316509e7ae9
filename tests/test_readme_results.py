"""The README's results table is what `pgolf results` computes from the committed runs, not a hand-kept copy."""

import re
from pathlib import Path

from pgolf.research.results_table import HEADER, results_markdown

REPO = Path(__file__).resolve().parents[1]


def test_readme_results_match_the_committed_runs():
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- RESULTS -->\n(.*?)\n<!-- /RESULTS -->", text, re.S)
    assert block, "README.md lacks the <!-- RESULTS --> block"
    expected = results_markdown(REPO / "runs")
    assert expected.count("\n") > HEADER.count("\n") + 5, "the committed runs give no results"
    assert block.group(1) == expected, "README results differ from `pgolf results`: paste its output into README.md"
