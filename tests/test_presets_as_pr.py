"""Every PR preset lists its deliberate differences, and ``<preset>_as_pr`` switches exactly those back.

The parity modules (tests/test_parity_pr*.py, which need the PRs' scripts) check the behaviours; this
always-on test checks the bookkeeping: the docstring names every restoring switch, each switch really
changes the preset, and nothing else differs between a preset and its ``_as_pr`` twin.
"""

import pytest

from pgolf.core.config import Config
from pgolf.running.presets import AS_PR, PRESETS, describe, get_preset


def _flat(cfg: Config) -> dict:
    return {f"{s}.{k}": v for s, d in cfg.to_dict().items() for k, v in d.items()}


@pytest.mark.parametrize("name", sorted(AS_PR))
def test_as_pr_twin_differs_exactly_by_the_documented_switches(name):
    base, twin = _flat(get_preset(name)), _flat(get_preset(f"{name}_as_pr"))
    changed = {k for k in base if base[k] != twin[k]}
    assert changed == set(AS_PR[name]), "each restoring switch must change the preset, and nothing else may"
    doc = describe(name)
    assert f"{name}_as_pr" in doc
    for key in AS_PR[name]:
        assert key in doc, f"{name}: the docstring does not name the switch {key}"


def test_every_pr_preset_has_a_twin_and_qat_defaults_to_the_export_quantizer():
    prs = [n for n in PRESETS if n.startswith("pr") and not n.endswith("_as_pr")]
    assert sorted(prs) == sorted(AS_PR)
    for n in prs:
        assert not get_preset(n).qat.own_quantizer, f"{n}: QAT through the export quantizer is pgolf's default"
        if get_preset(n).qat.enabled:  # PR #1394 trains without QAT
            assert get_preset(f"{n}_as_pr").qat.own_quantizer
