"""What transfers: pgolf's CPU effect of a technique beside the records' full-scale evidence for it.

Each notebook ends with :func:`transfer_table`: per technique, pgolf's paired effect (its 95% CI, Holm-adjusted p,
seeds and the regime it ran in: training tokens per parameter), the records' evidence (record folder, seeds, the
number its README or logs give, and what kind of evidence it is), and whether the directions agree.

The kinds, from strongest to weakest (the records rarely isolate a technique):

- ``same-weights``: the same trained weights scored with and without it (evaluation-only techniques);
- ``isolated``: two trainings that differ only in it;
- ``sweep row``: one row of a one-seed sweep or ablation table, or a README's one-sample statement;
- ``bundled``: a change that came with others in one record, so the number is not the technique's alone;
- ``none``: the records adopt it with no number.

:data:`EVIDENCE` holds the records' numbers as their READMEs and logs state them (cited by URL); negative is better
(lower bpb). Only a ``same-weights`` or ``isolated`` number can confirm or contradict a direction: for the others the
table says the records give no clean test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pgolf.core.config import Config
from pgolf.research.scales import regime
from pgolf.research.stats import RULE_ALPHA

RECORDS_URL = "https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/"
Kind = Literal["same-weights", "isolated", "sweep row", "bundled", "none"]
CLEAN: tuple[Kind, ...] = ("same-weights", "isolated")


@dataclass(frozen=True)
class Evidence:
    """One record's number for a technique: ``delta_bpb`` (negative = better; None where it gives none),
    ``seeds`` as it states them, ``kind`` (see the module docstring) and what exactly was compared."""
    record: str  # the folder under records/track_10min_16mb/
    delta_bpb: float | None
    seeds: str
    kind: Kind
    compared: str

    @property
    def url(self) -> str:
        return RECORDS_URL + self.record.replace(" ", "%20")

    def describe(self) -> str:
        number = "no number" if self.delta_bpb is None else f"{self.delta_bpb:+.4f} bpb"
        return f"[{self.record}]({self.url}): {number}, {self.seeds}, {self.kind}: {self.compared}"


EVIDENCE: dict[str, tuple[Evidence, ...]] = {
    "sliding_eval": (
        Evidence("2026-03-19_MixedQuant_Int6Int8_SlidingWindow", -0.0335, "1 run", "same-weights",
                 "stride-64 sliding vs non-overlapping evaluation of the same model"),
        Evidence("2026-03-19_SlidingWindowEval", -0.0319, "1 run each", "bundled",
                 "this record's run vs the naive baseline's (two trainings)"),
    ),
    "ntk_long_eval": (
        Evidence("2026-03-19_WarmdownQuantization", None, "1 run per length", "sweep row",
                 "evaluation at 1408 tokens (1.375x training) called optimal with NTK RoPE; no same-weights delta"),
    ),
    "swiglu": (
        Evidence("2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", -0.010, "1 run each", "sweep row",
                 "relu² → SwiGLU at MLP 3x, ternary weights, +4.25 MB (runs F64 vs F59 of its RESULTS.md)"),
        Evidence("2026-03-18_FP16Embed_WD3600", None, "not stated", "none",
                 "tried and dropped as a net negative at 45% slower steps"),
    ),
    "late_qat": (
        Evidence("2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233", -0.0001, "3-seed means, per-change "
                 "seeds not stated", "bundled", "late-QAT threshold 0.1 → 0.15, one row of a stacked table"),
        Evidence("2026-03-19_MixedQuant_Int6Int8_SlidingWindow", 0.0015, "1 run", "bundled",
                 "int6 matrices trained with QAT + int8 embedding: the round trip's whole penalty"),
        Evidence("2026-03-19_Seq2048_FP16Emb_TunedLR", None, "3 seeds", "none",
                 "int6 STE QAT from step 0: quantization gap 0.0000 (no run without QAT); step time 72 ms vs 69 ms "
                 "without QAT (its README calls this '~28%' overhead; the numbers give 4%)"),
        Evidence("2026-04-01_Vocab4096_MLPMult4_WD085", None, "not stated", "none",
                 "QAT removed ('appeared to provide little or no benefit') in the change that added GPTQ; the "
                 "later records quantize with GPTQ (2026-04-03's README still lists a soft-round QAT)"),
    ),
    "smeargate": (
        Evidence("2026-03-19_smeargate_orthoinit_muonwd", None, "not stated", "none",
                 "static per-dimension SmearGate, init sigmoid(3.0) ≈ 0.95, adopted with orthogonal init and Muon "
                 "WD; no isolated number"),
        Evidence("2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", -0.0012, "1 run each", "sweep row",
                 "Smear in 100-1500-step ternary development runs, 22% slower"),
        Evidence("2026-04-01_Vocab4096_MLPMult4_WD085", None, "not stated", "none",
                 "SmearGate removed with the move to a 4096 vocabulary ('less necessary after increasing the vocab "
                 "size'); no number"),
    ),
    "gptq": (
        Evidence("2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233", -0.0006, "3-seed means, per-change "
                 "seeds not stated", "bundled", "GPTQ-lite (5 clip percentiles per row) vs a fixed row-max clip"),
        Evidence("2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072", -0.0046, "not stated", "bundled",
                 "full-Hessian GPTQ together with XSA on all layers and BigramHash 3072"),
    ),
    "sdclip": (
        Evidence("2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2", None, "not stated", "none",
                 "k = 12.85 σ (matrices) / 20 σ (embedding) chosen so the artifact lands near 16 MB; no bpb number"),
    ),
    "depth_recurrence": (
        Evidence("2026-03-31_ParallelResiduals_MiniDepthRecurrence", None, "1 sample", "sweep row",
                 "layers 4-5 looped at the U-Net middle: '0.002-0.003 BPB' in its text; position mattered"),
        Evidence("2026-04-03_MuonEqR_DepthRecurrence_WD090_AllInt6", -0.003, "not stated", "bundled",
                 "'~0.003 BPB' from recurrence, with MuonEq-R, WD 0.090 and all-int6"),
        Evidence("2026-03-31_ParallelResiduals_MiniDepthRecurrence", -0.0010, "seeds not stated", "sweep row",
                 "recurrence switched on at step 3000 vs always on: about 1.1163 → 1.1153 post-TTT, older base"),
    ),
    "skip_gates": (
        Evidence("2026-04-01_Vocab4096_MLPMult4_WD085", -0.0216, "3 seeds", "bundled",
                 "sigmoid-gated U-Net skips (from PR #1089) added with SP4096, MLP 4x, WD 0.085, GPTQ, brotli and "
                 "QK-gain 4: the whole change vs the 2026-03-23 record it builds on (1.1194 → 1.09785)"),
        Evidence("2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2", None, "not stated", "none",
                 "kept in the stack (SKIP_GATES_ENABLED=1 by default, trained as control tensors); no ablation"),
    ),
    "int6_export": (
        Evidence("2026-03-19_10L_MixedPrecision", None, "1 run", "none",
                 "int6 on layers 3-6 of 10: 17.6 MB → 15.9 MB at int8 + zlib; the round trip's whole gap 0.0018 bpb "
                 "(the baseline's int8 gap: 0.0093); no same-weights int8 vs int6 number"),
        Evidence("2026-03-19_MixedQuant_Int6Int8_SlidingWindow", 0.0015, "1 run", "bundled",
                 "int6 matrices trained with QAT + int8 embedding: the round trip's whole penalty, not int6 vs int8"),
    ),
    "int5_mlp": (
        Evidence("2026-03-20_10L_Int5MLP_MuonWD04_SWA50", -0.003, "seeds not stated", "bundled",
                 "int5 MLP / int6 attention, 'saves ~1.86MB vs uniform int6', spent on a 10th layer: the two together"),
    ),
    "pruning": (
        Evidence("2026-03-20_10L_Int5MLP_MuonWD04_SWA50", None, "not stated", "none",
                 "3% magnitude pruning in the stack; no number"),
    ),
    "ttt_vs_plain": (
        Evidence("2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611", -0.0127, "3 seeds (42, 0, 1234)",
                 "same-weights", "phased LoRA TTT vs the non-sliding quantized evaluation of the same artifact "
                 "(logs: -0.01265, -0.01282, -0.01269)"),
    ),
    "ttt_vs_sliding": (
        Evidence("2026-03-23_LeakyReLU_LegalTTT_ParallelMuon", -0.0025, "3 seeds", "same-weights",
                 "score-first SGD TTT vs sliding evaluation of the same model"),
        Evidence("2026-04-06_SP8192_QK5_LegalTTT_1.0828", -0.00206, "3 seeds", "same-weights",
                 "score-first TTT vs sliding evaluation of the same model"),
    ),
}


SAME_WEIGHTS_NOTE = ("Of the techniques in notebooks 01-06, sliding-window evaluation is the only one with a clean "
                     "same-weights ablation at full scale (-0.0335 bpb, one run, the 2026-03-19 MixedQuant record); "
                     "every other record number here is a single-seed sweep row or a bundled change, so it can neither "
                     "confirm nor contradict pgolf's direction.")


def regime_text(scale: str, cfg: Config, steps: int | None = None) -> str:
    """The regime column of a scale: training tokens per parameter and per non-embedding parameter
    (:func:`pgolf.research.scales.regime`; ``steps``: the steps the runs took), beside the records'."""
    r = regime(cfg, steps)
    return (f"{scale}: {r['tokens_per_param']:.1f} training tokens per parameter "
            f"({r['tokens_per_non_embedding_param']:.1f} per non-embedding parameter); the records: about 109 "
            "(PR #1394) to 423 (the baseline) per parameter")


@dataclass(frozen=True)
class Effect:
    """pgolf's measurement of a technique: a row of :func:`pgolf.research.stats.compare` (with ``p_holm`` where
    the notebook adjusted its family) and the regime it ran in."""
    technique: str  # a key of EVIDENCE
    label: str  # what was compared, e.g. "smear_per_dim vs control, micro"
    test: pd.Series
    regime: str  # e.g. "micro: 6.6 training tokens per parameter"


def _p(test: pd.Series) -> float:
    return float(test["p_holm"]) if "p_holm" in test.index and np.isfinite(test["p_holm"]) else float(test["p"])


def agreement(effect: Effect, evidence: tuple[Evidence, ...]) -> str:
    """Whether pgolf's direction agrees with the records' cleanest number: only a significant pgolf effect
    (Holm-adjusted p < alpha) and a ``same-weights`` or ``isolated`` record number can agree or disagree."""
    clean = [e for e in evidence if e.kind in CLEAN and e.delta_bpb is not None]
    significant = np.isfinite(_p(effect.test)) and _p(effect.test) < RULE_ALPHA
    if not clean:
        return "no clean record test" + ("" if significant else "; pgolf not significant")
    if not significant:
        return "pgolf not significant"
    same = all(np.sign(e.delta_bpb) == np.sign(effect.test["diff"]) for e in clean)
    return "yes" if same else "no"


def transfer_table(effects: list[Effect]) -> pd.DataFrame:
    """The notebook's closing table: one row per pgolf effect, the records' evidence beside it."""
    rows = []
    for eff in effects:
        if eff.technique not in EVIDENCE:
            raise KeyError(f"no record evidence for technique {eff.technique!r}; known: {sorted(EVIDENCE)}")
        t, evidence = eff.test, EVIDENCE[eff.technique]
        ci = f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]" if np.isfinite(t["ci_low"]) else "no CI"
        rows.append({"technique": eff.technique, "pgolf (CPU)": f"{eff.label}: {t['diff']:+.4f} bpb, 95% CI {ci}, "
                     f"p (Holm) {_p(t):.2g}, {int(t['n_pairs'] or t['n'])} seeds",
                     "regime": eff.regime, "records (full scale)": "<br>".join(e.describe() for e in evidence),
                     "directions agree": agreement(eff, evidence)})
    return pd.DataFrame(rows)


def transfer_markdown(effects: list[Effect]) -> str:
    """:func:`transfer_table` as a markdown table (the notebooks display it with ``Markdown``)."""
    table = transfer_table(effects)
    cells = lambda row: "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"  # noqa: E731
    return "\n".join([cells(table.columns), "|" + "---|" * len(table.columns), *(cells(r) for r in table.to_numpy())])
