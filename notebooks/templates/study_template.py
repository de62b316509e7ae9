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
# # NN · TITLE: one line that states the question
#
# A template for a new study (docs/adding-a-technique.md). Copy it to `notebooks/NN_<study>.py`, replace every
# `TODO`, and run it with `pgolf notebooks run NN`. It is not a notebook test itself: pytest collects only
# `notebooks/NN_*.py`.
#
# **Question.** TODO: what does the switch change, and what would count as an answer (lower `q_val_bpb` after the
# export round trip, at the same step budget, at both CPU scales)?
#
# **What was claimed.** TODO: the PR or record that proposes it, with its public URL and its own numbers.
#
# **Method** (the research protocol, docs/protocol.md). Each arm is the shared `control` of its scale plus the
# overrides below; seed s sets the init seed and the data-order seed, so arms are paired by seed. Each
# comparison is the mean paired difference with its 95% CI, the two-sided p, the record rule's one-sided p
# (an improvement of at least 0.005 nats) and the minimal detectable effect (α = 0.01, power 0.8).

# %% tags=["parameters"]
scales: list = ["micro", "small"]  # protocol scales (pgolf.research.scales), smallest first
seeds: dict = {"micro": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "small": [0, 1, 2]}  # replicates per scale
arms: dict = {}  # arms per scale (default: every arm of ARM_OVERRIDES at every scale)
overrides: dict = {}  # applied to every arm on top of each scale (smoke tests shrink it)
rerun: bool = False  # True: train again even if finished runs with these configs exist
jobs: int = 0  # parallel training processes (0: one per CPU)
launcher: str = "local"  # "local" or "slurm" (docs/gpu-and-cluster.md)
slurm: dict = {}  # SLURM settings (pgolf.research.slurm.SlurmSettings)
plan_only: bool = False  # True: print the plan and stop

# %%
import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core.paths import figures_dir, runs_dir
from pgolf.research import figures, protocol
from pgolf.research.report import arm_table, verdict

STUDY = "my_study"  # TODO: the folder under runs/, the figure's file name and the study's name in `pgolf results`
NUMBER = "NN"  # TODO: the notebook's number, e.g. "07"
TITLE = "My switch minus the control, after the int8 roundtrip"  # TODO: the figure's title
ARM_OVERRIDES = {  # TODO: arm name -> config overrides on top of the scale's control (keys: pgolf config tiny)
    "my_arm": {"model.logit_softcap": 20.0},
}
arms = {sc: arms.get(sc, list(ARM_OVERRIDES)) for sc in scales}
ARMS = {sc: {a: ARM_OVERRIDES[a] for a in arms[sc]} for sc in scales}

# %% [markdown]
# ## Runs
#
# Missing runs train (the shared control's are reused); `write_selection` records which runs this study used
# and, with `number`, lists the study in `pgolf results` and its figure in `pgolf figures`.

# %%
runs = protocol.studies(ARMS, seeds, overrides=overrides, rerun=rerun, jobs=jobs or None, launcher=launcher,
                        slurm=slurm, plan_only=plan_only)
figures.write_selection(runs_dir(), STUDY, runs, number=NUMBER, title=TITLE)
runs[["scale", "arm", "seed", "shared_control", "steps", "model_params", "val_bpb", "q_val_bpb"]]

# %% [markdown]
# ## Results
#
# Per arm: mean ± std over seeds. Then each arm minus the shared control, paired by seed.

# %%
for sc in scales:
    display(Markdown(f"**{sc}**"))
    display(arm_table(runs[runs["scale"] == sc]))
tests = protocol.comparisons(runs, "q_val_bpb")
display(tests[["n_pairs", "diff", "ci_low", "ci_high", "p", "p_rule", "mde", "clears_rule"]].style.format(
    {c: "{:+.4f}" for c in ("diff", "ci_low", "ci_high")} | {"mde": "{:.4f}", "p": "{:.2g}", "p_rule": "{:.2g}"}))

# %%
(fig_path,) = figures.paired_figure(runs_dir(), figures_dir(), STUDY, TITLE)
display(SVG(filename=str(fig_path)))

# %% [markdown]
# *Per scale: each seed's difference from the shared control after the round trip (grey), their mean with its
# 95% CI (black), zero (grey line) and the record rule's −0.005 nats in bpb (red dashed).*
#
# ## Conclusion
#
# Computed from the numbers; say only what they support.

# %%
display(Markdown("\n".join(f"- **{sc}**, {arm}: " + verdict(tests.loc[(sc, arm)], arm, "control", "q_val_bpb")
                           for sc in scales for arm in ARMS[sc])))
