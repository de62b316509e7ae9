# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · SmearGate: scalar vs per-dimension, with enough seeds to tell them apart
#
# **Question.** SmearGate blends each token's embedding with the previous token's,
# `x_t ← g·x_t + (1 − g)·x_{t−1}` with `g = sigmoid(gate)`, a cheap way to give the first layer bigram context.
# Does it lower val_bpb, and is a gate per embedding dimension better than one scalar gate?
#
# **What was claimed.**
# - Seed 004 (https://github.com/openai/parameter-golf/pull/194, 1.1480 3-seed mean): "Per-Dimension SmearGate …
#   More expressive than scalar gating — each embedding dimension gets its own blend ratio. Zero-initialized,
#   512 params", as one of five techniques; the PR publishes no run that isolates the gate.
# - The records (https://github.com/openai/parameter-golf/tree/main/records): per-dim gates initialized at 3.0
#   (g ≈ 0.95) and at 0 (g = 0.5) both appear without a published ablation; removed on 2026-04-01 ("less
#   necessary after increasing vocab"); an input-dependent 13-parameter version returned on 2026-04-16.
# - The **BOS rule** (from the audit of https://github.com/openai/parameter-golf/pull/1797): in a packed stream
#   the last token of document N was smeared into the BOS of document N+1. pgolf's gate never blends across a
#   BOS token (`model.bos_id`), so no document sees the previous one through the gate.
#
# **Method** (the research protocol, `pgolf.research.protocol`).
# - Scales `micro` (d = 64; both gates) and `small` (d = 128; the per-dim gate only, for CPU time), described by
#   their regime: `micro` trains 6.6 tokens per parameter, `small` 1.0 (the records about 109-423), so `small` is
#   further from the challenge's regime, not closer. The per-dim vs scalar question was first piloted with 3 seeds
#   at d = 128, which measured per-dim − scalar ≈ −0.012 bpb with a paired sd that made 7 seeds enough at
#   α = 0.01; the confirmation below ran at d = 64 (`micro`, 10 seeds), and `small` has no scalar arm, so per-dim
#   vs scalar is confirmed at d = 64 only. The per-dim gate's effect at the two scales is compared by a Welch test
#   on their per-seed paired differences.
# - Arms: the **shared control** (`control`, no gate: the same runs as in 01 and 02), `smear_scalar` (one
#   parameter) and `smear_per_dim` (d parameters). **Gate init of these two as run: logit 0, g = 0.5**
#   (`model.smear_init=half`, seed 004's "zero-initialized"), an even mix of x_t and x_{t−1} at step 0; the gate
#   sits before the embedding RMSNorm, is trained by Adam with the other scalars and exported in fp32 (a control
#   tensor). A third arm at `micro`, `smear_per_dim_g095`, is the per-dim gate with the 2026-03-19 record's init,
#   logit 3, g = sigmoid(3) ≈ 0.95 (`model.smear_init=identity`, mostly the current token at step 0), whatever
#   `smear_init` says; it is compared with the control and with the per-dim gate at g = 0.5.
# - Common random numbers as in 01: the gated arms share every other tensor's init and the data order with the
#   control. Comparisons: each gate vs the control, and per-dim vs scalar, paired by seed.

# %% tags=["parameters"]
scales: list = ["micro", "small"]  # protocol scales (pgolf.research.protocol.SCALES)
seeds: dict = {"micro": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "small": [0, 1, 2]}  # replicates per scale
smear_init: str = "half"  # init of smear_scalar and smear_per_dim: "half" (logit 0, g = 0.5) or "identity" (logit 3, g ≈ 0.95)
arms: dict = {"micro": ["smear_scalar", "smear_per_dim", "smear_per_dim_g095"], "small": ["smear_per_dim"]}  # gated arms per scale
overrides: dict = {}  # applied to every arm on top of each scale (none for the study; smoke tests shrink it)
rerun: bool = False  # True: train again even if finished runs with these configs exist
jobs: int = 0  # parallel training processes (0: one per CPU)
launcher: str = "local"  # where missing runs train: "local" (this machine) or "slurm" (one job array; docs/gpu-and-cluster.md)
slurm: dict = {}  # SLURM settings: partition, account, qos, max_parallel, extra, ... (pgolf.research.slurm.SlurmSettings)
plan_only: bool = False  # True: print the plan (runs to train and reused, GPU-hours, command or batch script) and stop

# %%
import numpy as np
import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core.model.embed import SMEAR_INIT_LOGIT
from pgolf.core.paths import figures_dir, runs_dir
from pgolf.research import figures, protocol
from pgolf.research.report import arm_table, scale_verdict, verdict
from pgolf.research.scales import regime
from pgolf.research.smear_gates import gate_table_cached
from pgolf.research.stats import compare, holm, scale_difference, seeds_needed
from pgolf.research.transfer import SAME_WEIGHTS_NOTE, Effect, regime_text, transfer_markdown

STUDY = "smeargate"
GATED = {"smear_scalar": {"model.smear_gate": "scalar", "model.smear_init": smear_init},
         "smear_per_dim": {"model.smear_gate": "per_dim", "model.smear_init": smear_init},
         # the 2026-03-19 record's init (g ≈ 0.95), whatever smear_init says
         "smear_per_dim_g095": {"model.smear_gate": "per_dim", "model.smear_init": "identity"}}
INIT_G = {a: 1 / (1 + np.exp(-SMEAR_INIT_LOGIT[o["model.smear_init"]])) for a, o in GATED.items()}
for a in {a for named in arms.values() for a in named}:
    if a not in GATED:
        raise ValueError(f"arms: unknown gated arm {a!r}; expected one of {sorted(GATED)}")
arms = {sc: [a for a in arms.get(sc, list(GATED))  # a scale not named (a GPU scale): every gate
             if not (a == "smear_per_dim_g095" and smear_init == "identity")]  # then it is smear_per_dim itself
        for sc in scales}

# %% [markdown]
# ## Runs

# %%
runs = protocol.studies({sc: {a: GATED[a] for a in arms[sc]} for sc in scales}, seeds, overrides=overrides, rerun=rerun,
                        jobs=jobs or None, launcher=launcher, slurm=slurm, plan_only=plan_only)
figures.write_selection(runs_dir(), STUDY, runs)
runs[["scale", "arm", "seed", "shared_control", "steps", "model_params", "val_bpb", "q_val_bpb", "step_avg_ms"]]

# %% [markdown]
# ## Results

# %%
for sc in scales:
    display(Markdown(f"**{sc}**"))
    display(arm_table(runs[runs["scale"] == sc]))


def between(a: str, b: str) -> pd.DataFrame:
    """Arm ``a`` against arm ``b`` (the reference), per scale where both ran, paired by seed."""
    return pd.concat([compare(g[g["arm"].isin([a, b])], b, "q_val_bpb").assign(scale=sc)
                      for sc, g in runs.groupby("scale", sort=False) if {a, b} <= set(arms[sc])]
                     or [pd.DataFrame(columns=["scale"])]).reset_index(names="arm").set_index(["scale", "arm"])


both = [sc for sc in scales if {"smear_scalar", "smear_per_dim"} <= set(arms[sc])]
tests = pd.concat({"vs control": protocol.comparisons(runs), "per_dim vs scalar": between("smear_per_dim", "smear_scalar"),
                   "g095 vs g0.5": between("smear_per_dim_g095", "smear_per_dim")}, names=["comparison"])
# the per-dim gate at two scales: does its effect differ between the two regimes? (Welch, per-seed differences)
two = [scales[0], scales[-1]]
scale_tests = pd.DataFrame({a: scale_difference(runs, a, protocol.CONTROL, "q_val_bpb", two) for a in ["smear_per_dim"]
                            if len(scales) > 1 and all(a in arms[sc] for sc in two)}).T
# one Holm family for the notebook: every comparison above and the scale comparison
adjusted = holm([*tests["p"], *scale_tests.get("p", [])])
tests["p_holm"], scale_tests["p_holm"] = adjusted[:len(tests)], adjusted[len(tests):]
display(tests[["n_pairs", "diff", "ci_low", "ci_high", "p", "p_holm", "p_rule", "mde", "clears_rule"]].style.format(
    {c: "{:+.4f}" for c in ("diff", "ci_low", "ci_high")} | {"mde": "{:.4f}", "p": "{:.2g}", "p_holm": "{:.2g}", "p_rule": "{:.2g}"}))

# %% [markdown]
# ## What the gates learned
#
# `sigmoid(smear.gate)` from each gated run's final weights: the weight kept on the current token (the rest comes
# from the previous token); it starts at the init above. Stored under `runs/smeargate/analysis/`
# (`pgolf.research.smear_gates`); only recomputing it needs the `final_model.pt` files, kept local.

# %%
gates = gate_table_cached(runs_root=runs_dir(), runs=runs[runs["arm"] != protocol.CONTROL], rerun=rerun)
display(gates.drop(columns=["values"]).style.format({c: "{:.3f}" for c in ("mean", "min", "max", "share_from_previous")}))

# %%
(fig_path,) = figures.smeargate_figure(runs_dir(), figures_dir())
display(SVG(filename=str(fig_path)))

# %% [markdown]
# *Per scale: each seed's difference from the shared control after the round trip (grey), their mean and 95% CI
# (black), zero and the rule's −0.005 nats (red dashed). Bottom left: per-dim vs scalar at d = 64. Bottom right: the
# learned gates, per-dim sorted (one line per run; colour = arm, line style = scale and so d), scalar as horizontal
# lines.*
#
# ## Conclusion

# %%
steps = runs.groupby("scale")["steps"].first()
control_cfg = {sc: protocol.control_config(sc, overrides) for sc in scales}
regimes = {sc: regime_text(sc, control_cfg[sc], int(steps[sc])) for sc in scales}
tokens_per_param = {sc: f"{regime(control_cfg[sc], int(steps[sc]))['tokens_per_param']:.1f} training tokens per "
                    "parameter" for sc in scales}
ran = list(dict.fromkeys(a for sc in scales for a in arms[sc]))
lines = ["- Gate init as run: " + ", ".join(f"`{a}` g = {INIT_G[a]:.3f}" for a in ran) + " at step 0."]
for sc in scales:
    for arm in arms[sc]:
        lines.append(f"- **{sc}**, {arm} vs no gate: {verdict(tests.loc[('vs control', sc, arm)], arm, 'control', 'q_val_bpb')}")
    if sc not in both:
        continue
    row = tests.loc[("per_dim vs scalar", sc, "smear_per_dim")]
    lines.append(f"- **{sc}**, per-dim vs scalar (seed 004's claim): "
                 f"{verdict(row, 'smear_per_dim', 'smear_scalar', 'q_val_bpb')}")
    if pd.notna(row["sd_diff"]) and row["sd_diff"] > 0 and row["diff"] != 0:
        lines.append(f"  With this spread (sd of paired differences {row['sd_diff']:.4f}), a true difference of the "
                     f"measured size ({row['diff']:+.4f}) needs {seeds_needed(sd_diff=row['sd_diff'], effect=row['diff'])} "
                     "seeds at α = 0.01 and power 0.8.")
    if ("g095 vs g0.5", sc, "smear_per_dim_g095") in tests.index:
        lines.append(f"- **{sc}**, per-dim at the record's init (g ≈ 0.95) vs at g = 0.5: " + verdict(
            tests.loc[("g095 vs g0.5", sc, "smear_per_dim_g095")], "smear_per_dim_g095", "smear_per_dim", "q_val_bpb"))
no_scalar = [sc for sc in scales if sc not in both]
if both and no_scalar:
    lines.append(f"- The per-dim vs scalar test above ran at {', '.join(both)} (d = 64) after a 3-seed pilot at d = 128 "
                 f"(−0.012); {', '.join(no_scalar)} ran no scalar arm, so that comparison has no test at d = 128.")
for arm, row in scale_tests.iterrows():
    lines.append("- Between the scales: " + scale_verdict(row, arm, "q_val_bpb", tokens_per_param) + " Both regimes "
                 "are early training; a gate that gives bigram context may matter most when little has been learned, "
                 "so neither scale predicts the effect at the records' 100+ tokens per parameter.")
if len(gates):
    moved = gates.groupby("arm")["mean"].mean()
    lines.append("- Mean learned gate " + ", ".join(f"`{a}` {v:.3f} (start {INIT_G[a]:.3f})" for a, v in moved.items())
                 + ".")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## What transfers
#
# pgolf's CPU effects beside the records' full-scale evidence (`pgolf.research.transfer`): a direction is compared
# only where both sides give a clean test (a significant Holm-adjusted effect here; a same-weights or isolated record
# number). The records never isolated SmearGate.

# %%
labels = {"vs control": "{arm} vs control, {sc}", "per_dim vs scalar": "smear_per_dim vs smear_scalar, {sc}",
          "g095 vs g0.5": "smear_per_dim_g095 vs smear_per_dim, {sc}"}
display(Markdown(transfer_markdown([Effect("smeargate", labels[c].format(arm=arm, sc=sc), row, regimes[sc])
                                    for (c, sc, arm), row in tests.iterrows()]) + "\n\n" + SAME_WEIGHTS_NOTE))
