"""docs/results.md's results table is what `pgolf results` computes from the committed runs, not a hand-kept copy."""

import re
from pathlib import Path

from pgolf.research.results_table import HEADER, results_markdown

REPO = Path(__file__).resolve().parents[1]
RESULTS_DOC = REPO / "docs" / "results.md"


def test_results_doc_matches_the_committed_runs():
    text = RESULTS_DOC.read_text()
    block = re.search(r"<!-- RESULTS -->\n(.*?)\n<!-- /RESULTS -->", text, re.S)
    assert block, f"{RESULTS_DOC} lacks the <!-- RESULTS --> block"
    expected = results_markdown(REPO / "runs")
    assert expected.count("\n") > HEADER.count("\n") + 5, "the committed runs give no results"
    assert block.group(1) == expected, \
        "docs/results.md differs from `pgolf results`: run `pgolf results --update docs/results.md`"
