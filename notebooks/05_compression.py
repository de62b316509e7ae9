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
# # 05 · Compression: bits per tensor class × compressor × pruning, on trained weights
#
# **Question.** The artifact is the quantized weights, serialized and compressed; with the code it must fit in
# 16,000,000 bytes. How do the bit width of the attention and MLP matrices, the compressor and magnitude pruning
# trade artifact bytes against the round-tripped val_bpb of trained weights?
#
# **What was claimed** (the records, https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb).
# - Baseline: per-row int8 + zlib-9, 15,815,847 B model + 47,642 B code; gap 0.0072 bpb.
# - int6 per row + zstd-22 "saves ~4MB vs int8+zlib" and paid for a 3× MLP (seed 003,
#   https://github.com/openai/parameter-golf/pull/128: 15,162,777 B). int5 MLP / int6 attention saved ~1.86 MB vs
#   all-int6 and paid for a 10th layer; int4 MLP was meant to pay for an 11th (seed 002,
#   https://github.com/openai/parameter-golf/pull/314, not run).
# - Compressors: zstd-22 ~1.5 MB smaller than zlib on an 11-layer int6 model; lzma "compresses worse than zlib for
#   int8 weight data" (FP16Embed); seed 001 used lzma with 5% pruning.
#
# **Method.** The weights are the **shared control** runs of the `micro` scale (notebooks 01–04), one per seed,
# each exported at every setting, loaded back and scored on the first `eval_tokens` validation targets: bytes and
# bpb of trained weights, with the spread across seeds. Grid: bits (attention, MLP) in `bit_grid`, compressor in
# `compressors` (each at its maximum level), magnitude pruning of each quantized matrix in `prune_fracs`, and
# bit-packing of the sub-8-bit codes for one bit setting. The embedding stays int8. Stored under
# `runs/compression/analysis/` with its inputs (`pgolf.research.compression`); only recomputing needs the weights.
#
# **Two byte counts.** The int8 tied embedding is 53% of `micro`'s parameters (about 3–12% in the records' models),
# and no setting here changes it, so whole-artifact ratios ("0.9× the bytes") are diluted by bytes that every setting
# shares. Each export therefore also reports `matrix_bytes`: the quantized attention and MLP matrices alone (codes,
# per-row scales and their metadata), compressed alone by the same compressor at the same level. Ratios of
# `matrix_bytes` are what a setting does to the tensors it touches; ratios of `artifact_bytes` are what it does to
# this model's artifact.
#
# **Real size.** Bytes of fresh (untrained) weights are not bytes of trained weights: this notebook makes no
# claim about what fits at real size from them. It measures how far off such an estimate is for the one real
# model with a published trained artifact: the official baseline at int8 + zlib.

# %% tags=["parameters"]
scale: str = "micro"  # protocol scale whose shared control runs are exported
seeds: list = [0, 1, 2, 3, 4]  # control runs (seeds) exported at every setting
overrides: dict = {}  # applied on top of the scale (none for the study; smoke tests shrink it)
rerun: bool = False  # True: retrain the runs and recompute every export even if results exist
jobs: int = 0  # parallel training processes (0: one per CPU)
eval_tokens: int = 20000  # validation targets scored per setting (the first N of the val stream)
bit_grid: list = [[8, 8], [6, 6], [6, 5], [6, 4]]  # (attention bits, MLP bits)
compressors: list = ["zlib", "zstd", "lzma"]  # byte compressors, each at its default (maximum) level
prune_fracs: list = [0.0, 0.03]  # fraction of smallest-magnitude entries zeroed in each quantized matrix
bitpack_bits: list = [6, 4]  # the (attention, MLP) setting also exported with dense bit-packing
calibrate: bool = True  # export the official baseline's fresh init at int8 + zlib (about a minute on CPU)
launcher: str = "local"  # where missing runs train: "local" (this machine) or "slurm" (one job array; docs/gpu-and-cluster.md)
slurm: dict = {}  # SLURM settings: partition, account, qos, max_parallel, extra, ... (pgolf.research.slurm.SlurmSettings)
plan_only: bool = False  # True: print the plan (runs to train and reused, GPU-hours, command or batch script) and stop

# %%
import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core.paths import figures_dir, runs_dir
from pgolf.data.build import build_dataset
from pgolf.research import compression, figures, protocol
from pgolf.research.compression import compression_grid, setting_label
from pgolf.research.stats import compare, with_holm
from pgolf.research.transfer import SAME_WEIGHTS_NOTE, Effect, regime_text, transfer_markdown

DATASET = build_dataset(None, None)
GRID = compression_grid(bit_grid=bit_grid, compressors=compressors, prune_fracs=prune_fracs, bitpack_bits=bitpack_bits)

# %% [markdown]
# ## Trained weights: bytes and bpb per setting

# %%
runs = protocol.study(scale, {}, seeds, overrides=overrides, rerun=rerun, jobs=jobs or None,
                      launcher=launcher, slurm=slurm, plan_only=plan_only)
trained = compression.trained_table_cached(runs_root=runs_dir(), run_dirs=list(runs["path"]), dataset=DATASET,
                                           eval_tokens=eval_tokens, grid=GRID, rerun=rerun)
trained["gap_bpb"] = trained["q_val_bpb"] - trained["val_bpb_fp"]
trained["arm"] = [setting_label(r) for r in trained.to_dict("records")]
per_setting = trained.groupby("arm", sort=False).agg(
    artifact_bytes=("artifact_bytes", "mean"), bytes_sd=("artifact_bytes", "std"),
    matrix_bytes=("matrix_bytes", "mean"), gap_bpb=("gap_bpb", "mean"),
    gap_sd=("gap_bpb", "std"), trained_over_fresh=("trained_over_fresh", "mean"))
display(per_setting.style.format({"artifact_bytes": "{:,.0f}", "bytes_sd": "{:,.0f}", "matrix_bytes": "{:,.0f}",
                                  "gap_bpb": "{:+.4f}", "gap_sd": "{:.4f}", "trained_over_fresh": "{:.2f}"}))

# %% [markdown]
# Each setting's round-trip loss against the int8 + zlib export of the same weights (the official export),
# paired by seed:

# %%
REFERENCE = "8/8 zlib"
tests = with_holm(compare(trained, REFERENCE, "q_val_bpb", threshold=float("nan")))


def ratio_to_reference(column: str) -> pd.Series:
    """Per setting, the mean over seeds of its ``column`` over the reference's on the same weights."""
    return (trained.pivot(index="seed", columns="arm", values=column)
            .div(trained[trained["arm"] == REFERENCE].set_index("seed")[column], axis=0).mean())


tests["bytes_vs_reference"] = ratio_to_reference("artifact_bytes").reindex(tests.index)
tests["matrix_bytes_vs_reference"] = ratio_to_reference("matrix_bytes").reindex(tests.index)
display(tests[["n_pairs", "diff", "ci_low", "ci_high", "p", "p_holm", "mde", "bytes_vs_reference",
               "matrix_bytes_vs_reference"]].style.format(
    {c: "{:+.4f}" for c in ("diff", "ci_low", "ci_high")} | {"mde": "{:.4f}", "p": "{:.2g}", "p_holm": "{:.2g}",
                                                             "bytes_vs_reference": "{:.3f}",
                                                             "matrix_bytes_vs_reference": "{:.3f}"}))

# %%
(fig_path,) = figures.compression_figure(runs_dir(), figures_dir())
display(SVG(filename=str(fig_path)))

# %% [markdown]
# *Each setting's mean artifact kB against its mean round-trip bpb loss (q_val_bpb − unquantized val_bpb on the same
# targets) with the 95% CI across seeds; colour = bits, marker = compressor, hollow = pruned, star = bit-packed.*
#
# ## How far fresh-init bytes are from trained bytes at real size

# %%
if calibrate:
    real = compression.real_scale_table_cached(
        runs_root=runs_dir(), presets=["baseline"], grid=[compression.ExportSetting("8/8", 8, 8, "zlib", 0.0, False)],
        compressors=["zlib"], code_bytes=0, rerun=rerun)
    calibration = compression.fresh_init_calibration(real)
    display(pd.Series(calibration).to_frame("baseline, int8 + zlib"))

# %% [markdown]
# ## Conclusion

# %%
share = per_setting.loc[REFERENCE, "matrix_bytes"] / per_setting.loc[REFERENCE, "artifact_bytes"]
reference = per_setting.loc[REFERENCE]
lines = [f"- {len(runs)} trained `{scale}` models (seeds {', '.join(map(str, runs['seed']))}); the reference is "
         f"`{REFERENCE}` (the official export), {reference['artifact_bytes']:,.0f} B on average, of which the "
         f"attention and MLP matrices compressed alone are {reference['matrix_bytes']:,.0f} B ({share:.0%}; the int8 "
         "embedding, the same in every setting, takes most of the rest). Each setting's bytes are given as a ratio to "
         "the reference's twice: the whole artifact, then the matrices alone (the tensors the setting changes)."]
for arm, row in tests.iterrows():
    size = (f"{row['bytes_vs_reference']:.3f}× the artifact bytes, {row['matrix_bytes_vs_reference']:.3f}× the "
            "matrix bytes")
    if row["diff"] == 0 and not row["sd_diff"] > 0:  # same codes, another lossless compressor: nothing to test
        lines.append(f"- `{arm}`: {size}; the same round-trip bpb in every run "
                     "(the same quantized codes; compression is lossless).")
        continue
    sig = "significant" if row["p_holm"] < 0.01 else "not significant"
    lines.append(f"- `{arm}`: {size}; round-trip bpb {row['diff']:+.4f} vs the "
                 f"reference, 95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], p = {row['p']:.2g}, "
                 f"Holm-adjusted over the notebook's {len(tests)} tests {row['p_holm']:.2g} ({sig} at α = 0.01).")
if calibrate:
    lines.append(f"- Real size: the official baseline's fresh init exports to {calibration['fresh_init_bytes']:,} B at "
                 f"int8 + zlib, its trained artifact was {calibration['official_trained_bytes']:,} B: trained weights "
                 f"take {calibration['trained_over_fresh']:.2f}× the fresh-init bytes. A fresh-init size estimate at real "
                 "size is off by that much for this one setting and by an unknown amount for others, so no setting is "
                 "said to fit from fresh weights here.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## What transfers
#
# pgolf's CPU effects on the round-trip bpb (against `8/8 zlib` on the same weights) beside the records' full-scale
# evidence (`pgolf.research.transfer`). The records state these knobs in bytes and in whole-stack scores, never as a
# same-weights bpb difference, so no direction can be compared. Compressors are lossless (the same bpb, fewer bytes:
# the byte ratios above) and not in the table; no record exported the MLP at int4 (seed 002 proposed it, unrun).

# %%
regime_note = regime_text(scale, protocol.control_config(scale, overrides), int(runs["steps"].iloc[0]))
techniques = {"6/6 zlib": "int6_export", "6/5 zlib": "int5_mlp", f"{REFERENCE} prune 0.03": "pruning"}
display(Markdown(transfer_markdown([Effect(t, f"{a} vs {REFERENCE}", tests.loc[a], regime_note)
                                    for a, t in techniques.items() if a in tests.index]) + "\n\n" + SAME_WEIGHTS_NOTE))
