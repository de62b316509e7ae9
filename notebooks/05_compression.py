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
# # 05 · Compression: bits per tensor class × compressor × pruning
#
# **Question.** The artifact is the quantized weights, serialized and compressed; together with the code it
# must fit in 16,000,000 bytes. How do the bit width of the attention and MLP matrices, the compressor and
# magnitude pruning trade artifact bytes against the round-tripped val_bpb, and which settings fit under the
# cap at the real model sizes?
#
# **What was claimed** (the records, https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb).
# - Baseline: per-row int8 + zlib-9, 15,815,847 B model + 47,642 B code; gap 0.0072 bpb (§3.1).
# - int6 per row + zstd-22 "saves ~4MB vs int8+zlib" and paid for a 3× MLP (seed 003, PR #128: 15,162,777 B).
#   int5 MLP / int6 attention (thwu1) saved ~1.86 MB vs all-int6 and paid for a 10th layer; int4 MLP was meant
#   to pay for an 11th (seed 002, PR #314, not run). int5 at d=512 cost +0.014 bpb in PR #1001 (§3.2).
# - Compressors (§3.10): zstd-22 ~1.5 MB smaller than zlib on 11L int6 (aruniyer), ~5% (Raahil); lzma
#   "compresses worse than zlib for int8 weight data" (FP16Embed); seeds 001 used lzma (extreme) with 5%
#   pruning; thwu1 pruned 3% of each large matrix before quantization (no separate number, §3.9).
#
# **Method.** Two sources of weights, kept apart because they answer different questions:
# 1. **Trained, tiny**: the quickstart run's final weights (`tiny`, the same `ablate` call as notebook 00,
#    whose cached run is reused), exported at every setting, loaded back and scored on the first
#    `eval_tokens` validation tokens. This gives *both* bytes and bpb, at toy size.
# 2. **Fresh init, real size**: the real presets' freshly initialized weights (seed 0), exported at every
#    setting with the `real_compressors` (zlib by default: zstd-22 and lzma take 30-60 s per real-size export), for *bytes* at the real parameter count. Fresh weights are not trained weights: the zero-initialized
#    output projections compress to almost nothing and the rest is uniform noise, so these bytes are not
#    what a trained model of that size would take. For scale, the tiny model's trained/fresh byte ratio per
#    setting is reported, and a naive extrapolation (real fresh bytes × that ratio) is shown, labelled as such.
#
# Grid: bits (attention, MLP) in `bit_grid`, compressor in `compressors` (zlib-9, zstd-22, lzma-9 extreme),
# magnitude pruning of each quantized matrix in `prune_fracs`, plus bit-packing of the sub-8-bit codes on and
# off for one bit setting. Everything else is each source's own export config (the embedding stays int8 for
# `tiny` and `baseline`; presets with `export.embed_fp16` keep it fp16). Results are stored under
# `runs/compression/analysis/` with their inputs and reused while they do not change (the real-size exports take
# minutes, mostly lzma and zstd-22); the code is `pgolf.research.compression`. Only recomputing the trained table
# needs the run's `final_model.pt`, which is kept local, not committed.

# %% tags=["parameters"]
base_preset: str = "tiny"  # the quickstart model (pgolf.running.presets.tiny): 4L d128
seed: int = 0  # seed of the quickstart run
budget_steps: int = 300  # the quickstart run's budget
common: dict = {  # notebook 00's training config; only the validation cadence differs (50 vs 100 steps), which
    # leaves the trained weights bitwise identical (checked), so 04 and 05 share one run
    "train.train_batch_tokens": 8192,
    "train.max_wallclock_seconds": 0,
    "schedule.warmdown_iters": 40,
    "train.val_loss_every": 50,
    "optim.muon_momentum_warmup_steps": 50,
    "export.keep_float_max_numel": 4096,
}
rerun: bool = False  # True: retrain the model and recompute every export even if results exist
jobs: int = 0  # parallel training processes (0: one per CPU)
eval_tokens: int = 60000  # validation targets scored per setting (the first N of the val stream)
bit_grid: list = [[8, 8], [6, 6], [6, 5], [6, 4]]  # (attention bits, MLP bits)
compressors: list = ["zlib", "zstd", "lzma"]  # byte compressors, each at its default (maximum) level
prune_fracs: list = [0.0, 0.03]  # fraction of smallest-magnitude entries zeroed in each quantized matrix
bitpack_bits: list = [6, 4]  # the (attention, MLP) setting also exported with dense bit-packing
real_presets: list = ["baseline", "pr128_int6_mlp3x_qat_sliding"]  # real-size presets (fresh init)
real_compressors: list = ["zlib"]  # compressors for the real-size exports (zstd-22 / lzma take ~30-60 s each)

# %%
from pathlib import Path

import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core import accounting
from pgolf.core.paths import figures_dir, runs_dir
from pgolf.data.build import build_dataset
from pgolf.research import figures
from pgolf.research.ablate import ablate
from pgolf.research.compression import (
    compression_grid,
    naive_trained_estimate,
    pareto_front,
    real_scale_table_cached,
    setting_label,
    trained_table_cached,
)

DATASET = build_dataset(None, None)
CODE_BYTES = accounting.code_bytes()
GRID = compression_grid(bit_grid=bit_grid, compressors=compressors, prune_fracs=prune_fracs, bitpack_bits=bitpack_bits)

# %% [markdown]
# ## 1. Trained weights at tiny size: bytes and bpb

# %%
runs = ablate("quickstart", base_preset, {"tiny": {}}, seeds=[seed], budget_steps=budget_steps, common=common,
              rerun=rerun, jobs=jobs or None)
run_dir = Path(runs["path"].iloc[0])
trained = trained_table_cached(runs_root=runs_dir(), run_dir=run_dir, dataset=DATASET, eval_tokens=eval_tokens,
                               grid=GRID, rerun=rerun)
trained["gap_bpb"] = trained["q_val_bpb"] - trained["val_bpb_fp"]
display(trained.drop(columns=["bits_attn", "bits_mlp", "val_bpb_fp"]).style.format({
    "artifact_bytes": "{:,}", "fresh_init_bytes": "{:,}", "trained_over_fresh": "{:.2f}", "q_val_bpb": "{:.4f}",
    "gap_bpb": "{:+.4f}", "prune_frac": "{:.2f}"}))

# %% [markdown]
# ## 2. Fresh-init weights at real size: bytes against the cap
#
# `total_bytes` = artifact + code bytes (the pgolf modules a submission needs). The naive
# trained estimate multiplies the fresh-init artifact by the tiny model's trained/fresh ratio for the same
# setting; it is an extrapolation across a 100× change in size, not a measurement.

# %%
real = real_scale_table_cached(runs_root=runs_dir(), presets=real_presets, grid=GRID, compressors=real_compressors,
                               code_bytes=CODE_BYTES, rerun=rerun)
real = naive_trained_estimate(real=real, trained=trained, code_bytes=CODE_BYTES)
display(real.drop(columns=["bits_attn", "bits_mlp"]).style.format({
    "params": "{:,}", "artifact_bytes": "{:,}", "total_bytes": "{:,}", "naive_trained_estimate": "{:,.0f}",
    "trained_over_fresh": "{:.2f}", "prune_frac": "{:.2f}"}))

# %%
(fig_path,) = figures.compression_figure(runs_dir(), figures_dir())
display(SVG(filename=str(fig_path)))

# %% [markdown]
# *Left: tiny trained weights, artifact kB against val_bpb after the round trip; colour = bits (attention/MLP),
# marker = compressor (star: bit-packed), hollow = pruned; the dashed line is the unquantized model. Right: real-size presets,
# fresh-init artifact + code bytes per setting (green fits, red does not) and the 16,000,000-byte cap (dashed).*
#
# ## Conclusion

# %%
plain = trained[~trained["bitpack"]]
ref = plain.set_index(["bits", "prune_frac", "compressor"])["artifact_bytes"]
lines = [f"- Tiny trained weights: the unquantized model scores {trained['val_bpb_fp'].iloc[0]:.4f} bpb on the first "
         f"{eval_tokens:,} val targets; the settings on the bytes/bpb Pareto front are "
         + "; ".join(f"{setting_label(r)} ({r['artifact_bytes']:,} B, {r['q_val_bpb']:.4f})" for _, r in pareto_front(trained).iterrows())
         + "."]
if "zlib" in compressors:
    for comp in [c for c in compressors if c != "zlib"]:
        ratio = (ref.xs(comp, level="compressor") / ref.xs("zlib", level="compressor")).mean()
        lines.append(f"- {comp} artifacts are {ratio:.3f}× the zlib size on average over bits and pruning (tiny, trained).")
if len(prune_fracs) > 1 and 0.0 in prune_fracs:
    p = max(prune_fracs)
    a, b = plain[plain["prune_frac"] == p].set_index(["bits", "compressor"]), plain[plain["prune_frac"] == 0].set_index(["bits", "compressor"])
    lines.append(f"- Pruning {p:.0%} changes bytes by {(a['artifact_bytes'] / b['artifact_bytes'] - 1).mean():+.1%} and bpb by "
                 f"{(a['q_val_bpb'] - b['q_val_bpb']).mean():+.4f} on average (tiny, trained).")
packed = trained[trained["bitpack"]].set_index("compressor")["artifact_bytes"]
unpacked = plain[(plain["bits"] == f"{bitpack_bits[0]}/{bitpack_bits[1]}") & (plain["prune_frac"] == 0)].set_index("compressor")["artifact_bytes"]
pack_change = pd.Series({c: packed[c] / unpacked[c] - 1 for c in packed.index if c in unpacked.index})
lines.append(f"- Bit-packing {bitpack_bits[0]}/{bitpack_bits[1]} changes bytes by "
             + ", ".join(f"{v:+.1%} ({c})" for c, v in pack_change.items())
             + (": the compressors already exploit the unused high bits of codes stored one per byte, and dense "
                "packing hides the byte-aligned structure they rely on." if (pack_change > 0).all() else
                ": packing saves bytes with " + ", ".join(pack_change[pack_change <= 0].index) + "."))
for name, g in real.groupby("preset", sort=False):
    fits = g[g["fits_fresh"]]
    est = g[g["fits_naive_estimate"]]
    lines.append(f"- `{name}` ({int(g['params'].iloc[0]):,} parameters): {len(fits)} of {len(g)} settings fit with fresh-init "
                 f"weights (smallest {g['total_bytes'].min():,} B, largest {g['total_bytes'].max():,} B); "
                 f"{len(est)} fit by the naive trained estimate"
                 + (f", e.g. {setting_label(est.sort_values('naive_trained_estimate').iloc[-1])} at "
                    f"{est['naive_trained_estimate'].max():,.0f} B." if len(est) else "."))
display(Markdown("\n".join(lines)))
