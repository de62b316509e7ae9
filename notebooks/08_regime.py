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
# # 08 · Structural techniques in the challenge's regime: a loop at the U-Net middle, gated skips, late QAT
#
# **Question.** `micro` and `small` train 6.6 and 1.0 tokens per parameter, the records about 100–600, and
# `micro`'s two layers cannot hold a technique where the records put it. At the `regime` scale (8 layers, d = 16,
# 103 training tokens per non-embedding parameter, inside one epoch of the corpus), do three of the April stack's
# techniques help when placed as the records place them: a loop at the U-Net middle, sigmoid-gated skips, and late
# QAT at int6? Is the int6 quantization gap here as large as at full scale, and does QAT or GPTQ close more of
# it? Does each effect differ from `micro`'s (a test, not two numbers side by side)?
#
# **What the records claim.**
# - *Depth recurrence.* The 2026-03-31 record
#   (https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/2026-03-31_ParallelResiduals_MiniDepthRecurrence)
#   swept the repeated pair's position and found "a clear sweet spot at layers 4,5, right around the U-Net hinge
#   point", worth "about 0.002-0.003 BPB" (one sample). The 2026-04-05 record
#   (https://github.com/openai/parameter-golf/pull/1394, 1.08563) loops layers 4–5 of 11 twice from 50% of
#   training, with no ablation. Notebook 06 looped the *last* of micro's 2 layers once: +0.0021 bpb (worse).
# - *Skip gates.* The 2026-04-01 record
#   (https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/2026-04-01_Vocab4096_MLPMult4_WD085)
#   "added sigmoid-gated skip connections to the unet" (from https://github.com/openai/parameter-golf/pull/1089)
#   with about ten other changes; PR #1394 keeps them. No record gives a number for the gates.
# - *Late QAT.* Notebook 02 found the micro control's whole int6 gap to be 0.0019 ± 0.0003 bpb, below the rule's
#   0.0028 bpb, so "a rule-size effect is excluded" there was guaranteed in advance. At full scale the int6 gap
#   is about 0.007–0.012 bpb. The 2026-04-01 record "removed quantization-aware training, since it appeared to
#   provide little or no benefit", and the records moved to GPTQ.
#
# **Method** (the research protocol, `pgolf.research.protocol`).
# - Scale `regime`, seeds 0–4, the **shared control** of that scale and three arms, each paired by seed with the
#   control on q_val_bpb: `loop_middle` (layers 3–4 of 8, the last encoder and first decoder layer, run three
#   times with shared weights from 50% of the steps: `loop_count=2` as PR #1394's `NUM_LOOPS=2`), `skip_gates`
#   (PR #1394's gates, trained as control tensors: fp32, Adam) and `qat_int6` (notebook 02's arm:
#   fake int6 over the last 15% of the steps, int6 export).
# - QAT against the control's own weights re-exported at int6 (`control@int6`, notebook 02's sweep on the runs'
#   own targets), on the score, the gap and the pre-quantization bpb; GPTQ against round-to-nearest on the same
#   control weights at int6 (notebook 06's sweep, `export.scale_floor=false` in both, on the same targets); and
#   the two routes to an int6 artifact against each other. Step-time cost: each arm's `step_avg_ms` over the
#   control's, per seed.
# - Against `micro`: Welch's t-test of the per-seed paired differences at `regime` against those at `micro`
#   (06's `loop_last_layer`, 02's `qat_int6`, the control's int6 gap), named by regime (tokens per parameter).
# - All tests of this notebook form one family, Holm-adjusted; verdicts use the adjusted p at α = 0.01.

# %% tags=["parameters"]
seeds: list = [0, 1, 2, 3, 4]  # replicates (init + data-order seed)
arms: list = ["loop_middle", "skip_gates", "qat_int6"]  # arms of pgolf.research.regime_study.arms() to run
gap_bits: list = [8, 6, 5, 4]  # widths the control is re-exported at (8: checks the runs' own score; 6: QAT's reference)
calibration_batches: int = 16  # training micro-batches whose activations make GPTQ's Hessians
overrides: dict = {}  # applied to every arm on top of the scale (none for the study; smoke tests shrink it)
rerun: bool = False  # True: retrain and recompute even if results exist
jobs: int = 0  # parallel training processes (0: one per CPU)
launcher: str = "local"  # where missing runs train: "local" (this machine) or "slurm" (one job array; docs/gpu-and-cluster.md)
slurm: dict = {}  # SLURM settings: partition, account, qos, max_parallel, extra, ... (pgolf.research.slurm.SlurmSettings)
plan_only: bool = False  # True: print the plan (runs to train and reused, GPU-hours, command or batch script) and stop

# %%
import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core.paths import figures_dir, runs_dir
from pgolf.data.build import build_dataset
from pgolf.research import bits_sweep, figures, gptq_sweep, protocol
from pgolf.research import regime_study as rs
from pgolf.research.report import arm_table, verdict
from pgolf.research.rescore import one_thread
from pgolf.research.scales import regime
from pgolf.research.stats import holm, rule_threshold
from pgolf.research.transfer import Effect, transfer_markdown

DATASET = build_dataset(None, None)
scale = rs.SCALE  # the study is this scale's; its runs are compared with micro's below
ARMS = {name: overrides_ for name, overrides_ in rs.arms().items() if name in arms}

# %% [markdown]
# ## Runs

# %%
runs = protocol.study(scale, ARMS, seeds, overrides=overrides, rerun=rerun, jobs=jobs or None,
                      launcher=launcher, slurm=slurm, plan_only=plan_only)
figures.write_selection(runs_dir(), rs.STUDY, runs)
reg = regime(protocol.control_config(scale, overrides), steps=int(runs["steps"].iloc[0]))
micro_reg = regime(protocol.control_config("micro"))  # micro's runs train all their iterations
regimes = {sc: f"{r['tokens_per_non_embedding_param']:.0f} training tokens per non-embedding parameter, "
               f"{r['tokens_per_param']:.1f} per parameter" for sc, r in ((scale, reg), ("micro", micro_reg))}
display(Markdown(f"`{scale}`: {reg['params']:,} parameters ({reg['non_embedding_params']:,} outside the tied "
                 f"embedding), {reg['tokens']:,} training tokens: **{regimes[scale]}**. `micro`: "
                 f"{regimes['micro']}."))
runs[["arm", "seed", "steps", "qat_step", "val_bpb", "q_val_bpb", "quant_gap_bpb", "step_avg_ms"]]

# %%
display(arm_table(runs))

# %% [markdown]
# ## The control's weights at int6: round-to-nearest and GPTQ
#
# Each control run's raw weights exported again at 8, 6, 5 and 4 bits (notebook 02's sweep; its 8-bit point must
# reproduce the run's own score; 5 and 4 bits say at which width the gap is as large as full scale's int6 gap) and at 6 bits by round-to-nearest and by GPTQ (notebook 06's sweep, with SD-clip
# beside them), every export scored on all the validation targets the runs scored. Stored under
# `runs/regime_study/analysis/` with their inputs; only recomputing them needs the weights (kept local).

# %%
controls = runs[runs["arm"] == protocol.CONTROL]
targets = int(controls["val_tokens_scored"].iloc[0])
with one_thread():  # as the ablation workers and the GPTQ sweep score (and no oversubscribed cores)
    bits_table = bits_sweep.bits_sweep_table(runs_root=runs_dir(), runs=controls, arms=[protocol.CONTROL],
                                             bits=sorted({8, rs.QAT_BITS, *gap_bits}, reverse=True), eval_tokens=targets,
                                             dataset=DATASET, rerun=rerun,
                                             table=rs.BITS_TABLE)
check = bits_table[bits_table["bits"] == 8].merge(controls[["seed", "q_val_bpb", "val_bpb"]], on="seed",
                                                  suffixes=("_sweep", "_run"))
worst = max((check["q_val_bpb_sweep"] - check["q_val_bpb_run"]).abs().max(),
            (check["val_bpb_fp"] - check["val_bpb"]).abs().max())
print(f"8-bit re-export vs the runs' own scores: largest difference {worst:.2e} bpb over {len(check)} runs")
assert worst < 1e-5, "the sweep must reproduce the runs' own evaluation"
gptq_table = gptq_sweep.gptq_sweep_table(runs_root=runs_dir(), run_dirs=list(controls["path"]), dataset=DATASET,
                                         bits=[rs.QAT_BITS], eval_tokens=targets,
                                         calibration_batches=calibration_batches, rerun=rerun, table=rs.GPTQ_TABLE)
gap_by_bits = bits_table.groupby("bits", sort=False)[["gap_bpb", "artifact_bytes"]].agg(["mean", "std"])
display(gap_by_bits)
display(gptq_sweep.labelled(gptq_table).groupby("arm", sort=False)[["gap_bpb", "artifact_bytes"]].agg(["mean", "std"]))

# %% [markdown]
# ## Results
#
# Every test below is one family (Holm). `vs` names each row's reference: the shared control, the control's
# weights at int6 (`control@int6`), or round-to-nearest on the same weights.

# %%
has = lambda arm: arm in ARMS  # noqa: E731
arm_tests = protocol.comparisons(runs).droplevel("scale")
qat = rs.qat_tests(runs, bits_table) if has(rs.QAT) else None
gptq = rs.gptq_tests(gptq_table)
routes = rs.qat_vs_gptq(runs, gptq_table) if has(rs.QAT) else None
micro_loop = figures.with_control(figures.selected_runs(runs_dir(), "frontier"))
micro_qat = figures.with_control(figures.selected_runs(runs_dir(), "qat"))
micro_bits = bits_sweep.TABLE.read(runs_dir())
pairs = rs.effect_pairs(runs, bits_table, micro_loop, micro_qat, None if micro_bits is None else micro_bits[1])
across = rs.scale_tests(pairs)

family = [(f"{arm} vs control", arm, "control", row) for arm, row in arm_tests.iterrows()]
if qat is not None:
    family += [(f"{rs.QAT} vs control@int6: {m}", rs.QAT, "control@int6", qat.loc[m]) for m in qat.index]
    family.append((f"{rs.QAT} vs control@int6 GPTQ: score", rs.QAT, "control@int6 GPTQ", routes))
family += [(f"GPTQ vs RTN, same weights, int6: {m}", rs.GPTQ, rs.RTN, gptq.loc[m]) for m in gptq.index]
family += [(f"{t}: {r['regime_arm']} at regime − {r['micro_arm']} at micro", "regime − micro", "(Welch)", r)
           for t, r in across.iterrows()]
adjusted = holm([row["p"] for *_, row in family])
tests = pd.DataFrame([{"test": name, "diff": row["diff"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                       "p": row["p"], "p_holm": p, "mde": row.get("mde", float("nan"))}
                      for (name, *_, row), p in zip(family, adjusted)]).set_index("test")
display(tests.style.format({c: "{:+.4f}" for c in ("diff", "ci_low", "ci_high")}
                           | {"mde": "{:.4f}", "p": "{:.2g}", "p_holm": "{:.2g}"}))
p_holm = dict(zip([name for name, *_ in family], adjusted))


def with_p(name: str, row: pd.Series) -> pd.Series:
    """A test's row with its Holm-adjusted p over this notebook's family (what the verdicts use)."""
    return pd.concat([row.drop("p_holm", errors="ignore"), pd.Series({"p_holm": p_holm[name]})])

# %% [markdown]
# ### Regime against micro
#
# Per technique, the per-seed paired differences at each scale and Welch's test of their means (diff = regime
# − micro). Named by regime: `regime` trains 103 tokens per non-embedding parameter (49 per parameter), `micro`
# 14 per non-embedding parameter (6.6 per parameter). The loops differ in more than the regime: micro's runs the
# last of its 2 layers twice, regime's runs the middle 2 of 8 three times; so the test says whether the two
# measured effects differ, not why. Late QAT and the gap are the same settings at both scales.

# %%
display(pairs.groupby(["technique", "scale", "arm"], sort=False)["diff"].agg(["count", "mean", "std"]))
if len(across):
    display(across[["regime_arm", "micro_arm", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p"]]
            .style.format({c: "{:+.4f}" for c in ("mean_a", "mean_b", "diff", "ci_low", "ci_high")} | {"p": "{:.2g}"}))

# %% [markdown]
# ### The int6 gap and what closes it; costs
#
# Step times: each arm's `step_avg_ms` over its seed's control's, over the whole run and, for the loop (on from
# 50% of the steps) and QAT (from 85%), over the steps where it is on (from `metrics.jsonl`). They are wall clock
# of one-thread processes on a shared 2-vCPU machine that ran other work at the same time, so a ratio is only as
# good as its spread over seeds.

# %%
closed = rs.gap_closed(runs, bits_table, gptq_table) if has(rs.QAT) else None
if closed is not None:
    display(closed.style.format({"gap_without": "{:+.4f}", "gap_with": "{:+.4f}", "closed_bpb": "{:+.4f}",
                                 "closed_share": "{:.0%}"}))
steps = rs.step_time_summary(runs)
display(steps.style.format({c: "{:.2f}×" for c in ("mean", "min", "max", "on_mean", "on_min", "on_max")}
                           | {"from_step": "{:.0f}"}, na_rep="–"))
seconds = rs.run_seconds(runs)
display(seconds.groupby("arm", sort=False)[["train_s", "eval_s", "timed_s"]].agg(["mean", "min", "max"]).round(1))

# %%
paths = figures.regime_figure(runs_dir(), figures_dir())
for path in paths:
    display(SVG(filename=str(path)))

# %% [markdown]
# *Left: each arm minus the shared control per seed (grey), mean and 95% CI (black); red dashed: the record
# rule. Middle: the two routes to int6, each against its own reference (named under each column). Right: the
# same technique's paired differences at `regime` and at `micro`, and the control's int6 gap at each.*
#
# ## Conclusion

# %%
gap6 = pairs[pairs["technique"] == "int6 gap without QAT"].groupby("scale")["diff"].agg(["mean", "std", "count"])
timed = seconds.loc[seconds["arm"] == protocol.CONTROL, "timed_s"]
lines = [f"- Regime: {reg['tokens_per_non_embedding_param']:.0f} training tokens per non-embedding parameter "
         f"({reg['tokens_per_param']:.1f} per parameter, {reg['params']:,} parameters), {len(seeds)} seeds. A control "
         f"run's timed parts (training loop + round-trip evaluation, one thread, wall clock on the shared 2-vCPU "
         f"machine under other load) took {timed.mean():.0f} s on average ({timed.min():.0f}–{timed.max():.0f} s); "
         "an untimed second evaluation, start-up and export come on top (one run measured alone: 123 CPU-s, "
         "`pgolf.research.scales`); the arms' are in the table above."]
for arm in ARMS:
    name = f"{arm} vs control"
    st = steps.loc[arm]
    on = (f"; {st['on_mean']:.2f}× ({st['on_min']:.2f}–{st['on_max']:.2f}×) from step {int(st['from_step'])} on, "
          "where it is switched on" if pd.notna(st["on_mean"]) else "")
    low, high = (st["on_min"], st["on_max"]) if pd.notna(st["on_mean"]) else (st["min"], st["max"])
    low, high = (1.0, 1.0) if pd.isna(low) else (low, high)  # no comparable seed: nothing to call noisy
    noisy = (" The spread over seeds crosses 1×: the load of the shared machine, not the technique, decides these "
             "wall-clock ratios." if low < 1 < high or high < 1 else "")
    fewer = (f"; only these of its {int(st['n_all'])} seeds were trained by the control's code, the others' step "
             "times are not compared" if st["n"] < st["n_all"] else "")
    timing = (f"Step time {st['mean']:.2f}× the control's over the whole run ({st['min']:.2f}–{st['max']:.2f}× over "
              f"{int(st['n'])} seeds{fewer}){on}.{noisy}" if st["n"] > 0 else
              "Its runs were trained by other code than the control's (`environment.json`: another commit, e.g. a "
              "faster training loop), so their step times are not compared.")
    lines.append(f"- `{arm}`: {verdict(with_p(name, arm_tests.loc[arm]), arm, 'control', 'q_val_bpb')} {timing}")
if scale in gap6.index:
    g = gap6.loc[scale]
    full = "inside" if 0.007 <= g["mean"] <= 0.012 else ("below" if g["mean"] < 0.007 else "above")
    threshold = rule_threshold(controls, "q_val_bpb")
    room = ("below it, so no QAT effect of the rule's size on the score can exist here either: the whole gap is "
            "smaller than the rule" if g["mean"] < threshold else "above it, so a rule-size QAT effect is possible here")
    lines.append(f"- The control's int6 gap at `{scale}` is {g['mean']:+.4f} ± {g['std']:.4f} bpb (mean ± std, "
                 f"{int(g['count'])} seeds): {full} the full-scale 0.007–0.012 bpb"
                 + (f"; at `micro` {gap6.loc['micro', 'mean']:+.4f} ± {gap6.loc['micro', 'std']:.4f}" if "micro" in gap6.index
                    else "")
                 + f". The record rule's 0.005 nats are {threshold:.4f} bpb here: the gap is {room}.")
    full_gap = (0.007, 0.012)  # the full-scale int6 gap (issue 22)
    means = gap_by_bits[("gap_bpb", "mean")]
    where = lambda g: "inside" if full_gap[0] <= g <= full_gap[1] else ("below" if g < full_gap[0] else "above")  # noqa: E731
    nearest = int(min(means.index, key=lambda b: max(full_gap[0] - means[b], means[b] - full_gap[1], 0.0)))
    lines.append("  - The control's gap by width: " + ", ".join(f"int{b} {g:+.4f} ({where(g)})" for b, g in means.items())
                 + f" the full-scale int6 range. The width nearest to it here is int{nearest}: a QAT test where the gap "
                 "is as large as at full scale needs that width at this regime (no QAT arm ran there).")
if qat is not None:
    for m, what in (("score", "final score"), ("gap", "gap"), ("pre_quant", "cost before quantization")):
        name = f"{rs.QAT} vs control@int6: {m}"
        metric = {"score": "q_val_bpb", "gap": "gap bpb", "pre_quant": "val_bpb"}[m]
        lines.append(f"  - QAT, {what}: {verdict(with_p(name, qat.loc[m]), rs.QAT, 'control@int6', metric)}")
for m in gptq.index:
    name = f"GPTQ vs RTN, same weights, int6: {m}"
    lines.append(f"  - GPTQ, {m}: {verdict(with_p(name, gptq.loc[m]), rs.GPTQ, rs.RTN, 'q_val_bpb' if m == 'score' else 'gap bpb')}")
if closed is not None:
    lines.append("  - Share of the int6 gap closed: " + "; ".join(
        f"{route} {r['closed_share']:.0%} ({r['gap_without']:+.4f} → {r['gap_with']:+.4f})" for route, r in closed.iterrows())
                 + ". The two routes' int6 scores against each other: "
                 + verdict(with_p(f"{rs.QAT} vs control@int6 GPTQ: score", routes), rs.QAT, "control@int6 GPTQ", "q_val_bpb"))
for t, r in across.iterrows():
    name = f"{t}: {r['regime_arm']} at regime − {r['micro_arm']} at micro"
    sig = "differs" if p_holm[name] < 0.01 else "does not differ significantly"
    lines.append(f"- {t}, `{scale}` ({regimes[scale]}) vs `micro` ({regimes['micro']}): the effect "
                 f"{sig} between them (Welch, regime {r['mean_a']:+.4f} over {int(r['n_a'])} seeds, micro "
                 f"{r['mean_b']:+.4f} over {int(r['n_b'])}; difference {r['diff']:+.4f}, 95% CI [{r['ci_low']:+.4f}, "
                 f"{r['ci_high']:+.4f}], p = {r['p']:.2g}, Holm-adjusted {p_holm[name]:.2g}).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## What transfers
#
# pgolf's CPU effects beside the records' full-scale evidence (`pgolf.research.transfer`): a direction is compared
# only where both sides give a clean test (a significant Holm-adjusted effect here; an isolated or same-weights
# record number). None of the four techniques has one in the records: the loop's numbers are a one-sample sweep
# and a bundled change, the skip gates came and QAT went with other changes, GPTQ's numbers are bundled too.

# %%
regime_text = f"{scale}: {regimes[scale]} (the records: about 100-600 per parameter)"
effects = [Effect({rs.LOOP: "depth_recurrence", rs.SKIP: "skip_gates"}[arm], f"{arm} vs control",
                  with_p(f"{arm} vs control", arm_tests.loc[arm]), regime_text) for arm in ARMS if arm != rs.QAT]
if qat is not None:
    effects.append(Effect("late_qat", f"{rs.QAT} vs control@int6 (score)",
                          with_p(f"{rs.QAT} vs control@int6: score", qat.loc["score"]), regime_text))
effects.append(Effect("gptq", "GPTQ vs round-to-nearest at int6, same weights",
                      with_p("GPTQ vs RTN, same weights, int6: score", gptq.loc["score"]), regime_text))
display(Markdown(transfer_markdown(effects)))
