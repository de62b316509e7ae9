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
# - Scales `micro` (both gates) and `small` (the per-dim gate only, for CPU time). The earlier 3-seed pilot at d=128 measured per-dim − scalar ≈ −0.012 bpb with a
#   paired sd that made 7 seeds enough at α = 0.01; this study uses 10 micro seeds and reports the seeds the
#   measured spread would need.
# - Arms: the **shared control** (`control`, no gate: the same runs as in 01 and 02), `smear_scalar` (one
#   parameter) and `smear_per_dim` (d parameters). **Gate init as run: logit 0, g = 0.5** (`model.smear_init=half`,
#   seed 004's "zero-initialized"), an even mix of x_t and x_{t−1} at step 0; the gate sits before the embedding
#   RMSNorm, is trained by Adam with the other scalars and exported in fp32 (a control tensor).
# - Common random numbers as in 01: the gated arms share every other tensor's init and the data order with the
#   control. Comparisons: each gate vs the control, and per-dim vs scalar, paired by seed.

# %% tags=["parameters"]
scales: list = ["micro", "small"]  # protocol scales (pgolf.research.protocol.SCALES)
seeds: dict = {"micro": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "small": [0, 1, 2]}  # replicates per scale
smear_init: str = "half"  # gate init of both gated arms: "half" (logit 0, g = 0.5) or "identity" (logit 3, g ≈ 0.95)
arms: dict = {"micro": ["smear_scalar", "smear_per_dim"], "small": ["smear_per_dim"]}  # gated arms per scale
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
from pgolf.research.report import arm_table, verdict
from pgolf.research.smear_gates import gate_table_cached
from pgolf.research.stats import compare, seeds_needed, with_holm

STUDY = "smeargate"
GATED = {"smear_scalar": {"model.smear_gate": "scalar", "model.smear_init": smear_init},
         "smear_per_dim": {"model.smear_gate": "per_dim", "model.smear_init": smear_init}}
INIT_G = 1 / (1 + np.exp(-SMEAR_INIT_LOGIT[smear_init]))
arms = {sc: arms.get(sc, list(GATED)) for sc in scales}  # a scale not named (a GPU scale): both gates

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
both = [sc for sc in scales if {"smear_scalar", "smear_per_dim"} <= set(arms[sc])]
per_dim_vs_scalar = pd.concat(
    {sc: compare(g[g["arm"].isin(list(GATED))], "smear_scalar", "q_val_bpb") for sc, g in runs.groupby("scale", sort=False)
     if sc in both}, names=["scale"])
tests = with_holm(pd.concat({"vs control": protocol.comparisons(runs), "per_dim vs scalar": per_dim_vs_scalar},
                            names=["comparison"]))
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
# (black), zero and the rule's −0.005 nats (red dashed). Right: the learned gates, per-dim sorted (one line per
# run), scalar as horizontal lines.*
#
# ## Conclusion

# %%
lines = [f"- Gate init as run: `{smear_init}`, g = {INIT_G:.3f} at step 0 in both gated arms."]
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
if len(gates):
    moved = gates.groupby("arm")["mean"].mean()
    lines.append("- Mean learned gate " + ", ".join(f"`{a}` {v:.3f}" for a, v in moved.items())
                 + f" (start {INIT_G:.3f}).")
display(Markdown("\n".join(lines)))
