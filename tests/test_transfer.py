"""The closing "what transfers" table: record evidence beside pgolf's effect, directions compared only where both
sides give a clean test."""

import numpy as np
import pandas as pd
import pytest

from pgolf.research import transfer
from pgolf.research.transfer import EVIDENCE, Effect, Evidence, agreement, transfer_markdown, transfer_table


def _test(diff, p, p_holm=np.nan):
    return pd.Series({"diff": diff, "ci_low": diff - 0.001, "ci_high": diff + 0.001, "p": p, "p_holm": p_holm,
                      "n_pairs": 10, "n": 10})


def test_directions_agree_only_with_a_significant_effect_and_a_clean_record_number():
    clean = (Evidence("2026-03-19_SlidingWindowEval", -0.03, "1 run", "same-weights", "x"),)
    bundled = (Evidence("2026-03-19_SlidingWindowEval", -0.03, "1 run", "bundled", "x"),)
    assert agreement(Effect("sliding_eval", "a", _test(-0.01, 1e-6), "micro"), clean) == "yes"
    assert agreement(Effect("sliding_eval", "a", _test(+0.01, 1e-6), "micro"), clean) == "no"
    assert agreement(Effect("sliding_eval", "a", _test(-0.01, 1e-6), "micro"), bundled) == "no clean record test"
    # significant raw p but not after Holm: not significant
    assert agreement(Effect("sliding_eval", "a", _test(-0.01, 0.002, 0.03), "micro"), clean) == "pgolf not significant"


def test_table_rows_cite_the_records_by_url_and_refuse_an_unknown_technique():
    table = transfer_table([Effect("ttt_vs_plain", "ttt vs no overlap, micro", _test(-0.004, 1e-5), "micro: 6.6 tokens/param")])
    row = table.iloc[0]
    assert row["directions agree"] == "yes" and "p (Holm) 1e-05" in row["pgolf (CPU)"]
    assert f"({transfer.RECORDS_URL}2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611)" in \
        row["records (full scale)"]
    with pytest.raises(KeyError, match="no record evidence for technique 'nope'"):
        transfer_table([Effect("nope", "x", _test(0, 1), "micro")])


def test_every_evidence_entry_is_well_formed():
    for technique, entries in EVIDENCE.items():
        assert entries, technique
        for e in entries:
            assert e.record[:11].count("-") == 2 and e.record[10] == "_", e.record  # YYYY-MM-DD_...
            assert e.kind in ("same-weights", "isolated", "sweep row", "bundled", "none")
            assert (e.delta_bpb is None) == (e.kind == "none") or e.kind == "sweep row", e


def test_markdown_table_has_one_row_per_effect_and_escapes_pipes():
    text = transfer_markdown([Effect("sliding_eval", "a | b", _test(-0.01, 1e-6), "micro")] * 2)
    lines = text.splitlines()
    assert lines[0].startswith("| technique | pgolf (CPU) |") and lines[1] == "|---|---|---|---|---|"
    assert len(lines) == 4 and "a \\| b" in lines[2]


def test_regime_text_states_tokens_per_parameter_of_the_scale():
    from pgolf.research.scales import SCALES
    from pgolf.research.transfer import regime_text
    text = regime_text("micro", SCALES["micro"].config(), steps=400)
    assert text.startswith("micro: 6.6 training tokens per parameter (")  # 400 x 2,048 tokens / 123,460 parameters
    assert regime_text("micro", SCALES["micro"].config(), steps=200).startswith("micro: 3.3 training tokens")


def test_evidence_covers_the_techniques_of_notebooks_02_05_and_the_regime_study():
    """Notebooks 02-06 and 08 (regime scale: loop at the U-Net middle, skip gates, late QAT int6) cite these."""
    assert {"late_qat", "smeargate", "sliding_eval", "int6_export", "int5_mlp", "pruning", "skip_gates",
            "depth_recurrence", "gptq", "sdclip"} <= set(EVIDENCE)
    assert [e.record for e in EVIDENCE["skip_gates"]] == ["2026-04-01_Vocab4096_MLPMult4_WD085",
                                                         "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2"]
