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
# # 03 · SmearGate: scalar vs per-dimension
#
# **Question.** SmearGate blends each token's embedding with the previous token's,
# `x_t ← g·x_t + (1 − g)·x_{t−1}` with `g = sigmoid(gate)`, a cheap way to give the first layer bigram
# context. Does it lower val_bpb, and is a gate per embedding dimension better than one scalar gate?
#
# **What was claimed.**
# - Seed 004 (https://github.com/openai/parameter-golf/pull/194, 1.1480 3-seed mean): "Per-Dimension SmearGate … More
#   expressive than scalar gating — each embedding dimension gets its own blend ratio. Zero-initialized,
#   512 params", as one of five techniques together with int6 QAT, SWA, Muon WD and an fp16 embedding. The PR
#   publishes no ablation that isolates the gate (no scalar-gate or no-gate run).
# - The records: v1 (per-dim, gate initialized at 3.0, g≈0.95) in `2026-03-19_smeargate_orthoinit_muonwd`;
#   v1′ (per-dim, gate at 0, g = 0.5, after the embedding norm) in the PR #162 lineage with no published
#   ablation; removed in 04-01 ("less necessary after increasing vocab"); a 13-parameter input-dependent
#   v2 returned in 04-16; SmearGate hurt looped models (DepthRecurrence non-record).
# - The **BOS rule** (found in the audit of https://github.com/openai/parameter-golf/pull/1797): in a packed stream the last token of
#   document N was smeared into the BOS of document N+1. pgolf's gate never blends across a BOS token
#   (`model.bos_id`, default 1; every document in the shards starts with BOS), so no document sees the
#   previous one through the gate.
#
# **Method.** `tiny` preset on CPU; arms `none` (control, no gate), `scalar` (`model.smear_gate=scalar`,
# one parameter) and `per_dim` (`model.smear_gate=per_dim`, 128 parameters). Both gates start at seed
# 004's zero init (`"model.smear_init": "half"` in `common`: logit 0, g = 0.5, an even mix of x_t and
# x_{t-1}); `"identity"` (logit 3.0, g ≈ 0.95) starts almost as without the gate. The gate sits before the embedding RMSNorm and is trained by Adam with the other scalars; it is a
# control tensor, so the export keeps it in fp32. Fixed: step budget, batch, schedule, seeds, int8 export with
# every block matrix quantized. Arms are paired by seed.

# %% tags=["parameters"]
base_preset: str = "tiny"  # CPU-sized baseline (pgolf.running.presets.tiny): 4L d128 4H/2KV, seq 256
seeds: list = [0, 1, 2]  # one run per arm and seed; arms are paired by seed
budget_steps: int = 150  # optimizer steps per run; no wallclock cap, so runs regenerate identically
common: dict = {  # fixed overrides for every arm
    "train.train_batch_tokens": 4096,  # tokens per optimizer step
    "train.max_wallclock_seconds": 0,  # step budget only
    "schedule.warmdown_iters": 40,  # linear LR decay over the last 40 steps
    "train.val_loss_every": 75,  # validation curve resolution (steps)
    "optim.muon_momentum_warmup_steps": 50,  # Muon momentum 0.85 -> 0.95 over the first 50 steps
    "export.keep_float_max_numel": 4096,  # quantize every block matrix, as at d512 (tiny's are all < 65,536)
    "model.smear_init": "half",  # seed 004's zero-initialized gate (g = 0.5); no effect on the `none` arm
}
rerun: bool = False  # True: train again even if finished runs with these configs exist
jobs: int = 0  # parallel training processes (0: one per CPU)

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core.model.embed import SMEAR_INIT_LOGIT
from pgolf.core.paths import figures_dir, runs_dir
from pgolf.data.build import build_dataset
from pgolf.research import figures
from pgolf.research.ablate import ablate
from pgolf.research.report import arm_table, verdict
from pgolf.research.smear_gates import gate_table_cached
from pgolf.research.stats import compare, summarize

STUDY = "smeargate"
CONTROL = "none"
ARMS = {"none": {}, "scalar": {"model.smear_gate": "scalar"}, "per_dim": {"model.smear_gate": "per_dim"}}
# %% [markdown]
# ## Runs

# %%
runs = ablate(STUDY, base_preset, ARMS, seeds=seeds, budget_steps=budget_steps, common=common, rerun=rerun,
              jobs=jobs or None)
figures.write_selection(runs_dir(), STUDY, runs)
runs[["arm", "seed", "steps", "model_params", "val_bpb", "q_val_bpb", "artifact_bytes", "step_avg_ms", "stale_code"]]

# %% [markdown]
# ## Results
#
# Mean ± std over seeds; `artifact_bytes` is the compressed weights only. The tests compare each gate with no
# gate, and `per_dim` with `scalar` (seed 004's claim).

# %%
display(arm_table(runs))
tests = pd.concat({
    "vs none": compare(runs, CONTROL, "q_val_bpb"),
    "vs scalar": compare(runs[runs["arm"].isin(["scalar", "per_dim"])], "scalar", "q_val_bpb"),
}, names=["comparison"])
display(tests[["n_pairs", "test", "diff", "p", "p_rule", "threshold", "clears_rule", "note"]])

# %% [markdown]
# ## What the gates learned
#
# `sigmoid(smear.gate)` from each run's final weights: the weight kept on the current token (the rest comes
# from the previous token). 1.0 would mean the gate is unused; the start value is sigmoid(3) ≈ 0.953 under
# the default init. The values are stored under `runs/smeargate/analysis/` with the runs they come from
# (`pgolf.research.smear_gates`), so only recomputing them needs the `final_model.pt` files, kept local.

# %%
gates = gate_table_cached(runs_root=runs_dir(), runs=runs[runs["arm"] != CONTROL], rerun=rerun)
display(gates.drop(columns=["values"]).style.format({c: "{:.3f}" for c in ("mean", "min", "max", "share_from_previous")}))

# %%
(fig_path,) = figures.smeargate_figure(runs_dir(), figures_dir())
display(SVG(filename=str(fig_path)))

# %% [markdown]
# *Left: post-roundtrip val_bpb per arm (mean ± std, seeds in grey). Right: learned gate values, the
# per-dimension gates sorted from largest to smallest (one line per seed), the scalar gates as horizontal lines.*
#
# ## Conclusion

# %%
manifest = json.loads((build_dataset(None, None) / "manifest.json").read_text())
unigram = manifest["unigram_val_bpb"]
control_bpb = summarize(runs, "val_bpb").loc[CONTROL, "mean"]
gated = runs[runs["arm"] != CONTROL]
smear_init = json.loads((Path(gated["path"].iloc[0]) / "config.json").read_text())["model"]["smear_init"]
init_g = 1 / (1 + np.exp(-SMEAR_INIT_LOGIT[smear_init]))  # the gates' value at step 0
lines = [
    f"- The control reaches val_bpb {control_bpb:.4f}, {abs(unigram - control_bpb):.3f} bpb "
    f"{'below' if control_bpb < unigram else 'above'} the corpus's unigram baseline ({unigram:.4f}).",
    f"- Scalar gate vs none: {verdict(tests.loc[('vs none', 'scalar')], 'scalar', CONTROL, 'q_val_bpb')}",
    f"- Per-dim gate vs none: {verdict(tests.loc[('vs none', 'per_dim')], 'per_dim', CONTROL, 'q_val_bpb')}",
    f"- Per-dim vs scalar (seed 004's claim that per-dim is better): "
    f"{verdict(tests.loc[('vs scalar', 'per_dim')], 'per_dim', 'scalar', 'q_val_bpb')}",
]
if len(gates):
    moved = gates.groupby("arm")["mean"].mean()
    lines.append("- Mean learned gate " + ", ".join(f"`{a}` {v:.3f}" for a, v in moved.items())
                 + f" (start {init_g:.3f}): the models take on average "
                 + ", ".join(f"{1 - v:.1%}" for v in moved.values) + " of each embedding from the previous token.")
display(Markdown("\n".join(lines)))
