"""One typed configuration tree for a pgolf run.

Every default equals the official baseline ``train_gpt.py`` of openai/parameter-golf, so
``Config()`` *is* the baseline. Techniques from the seed PRs are fields that default to off.

Three ways in, all validated the same way:
- presets (``pgolf.running.presets``), then dotted overrides: ``model.num_layers=11``;
- the official environment names (``NUM_LAYERS=11``), mapped in :data:`ENV_KEYS` and the switches of
  :data:`ENV_SPECIAL` only (:func:`from_env`; an error names the variable, e.g. ``QAT='2': expected 0/1/...``);
- JSON (``Config.to_json`` / ``Config.from_json``), which round-trips exactly.
Unknown keys and invalid values raise :class:`ConfigError` naming the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and what was expected."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


SEED_MAX = 2**32 - 1  # numpy.random.seed's limit (torch.manual_seed accepts it too)


def _check_finite(section: object, name: str) -> None:
    """Every float field of ``section`` is a finite number (nan and inf pass every ``>`` check and only fail
    deep inside training, far from the key that caused them)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float):
            _check(math.isfinite(value), f"{name}.{f.name}", f"expected a finite number, got {value}")


def _check_seed(value: object, key: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX, key,
           f"expected an integer in [0, {SEED_MAX}], got {value!r}")


# Name substrings of the control tensors (the official CONTROL_TENSOR_NAME_PATTERNS): gains, mixes and gates
# that the optimizer, the dtype layout and the export all treat apart from the weight matrices.
DEFAULT_CONTROL_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
    "q_gain", "skip_weight", "skip_weights", "smear", "bigram.scale",
)


@dataclass
class ModelConfig:
    vocab_size: int = 1024  # tokens in the tokenizer
    num_layers: int = 9  # transformer blocks
    model_dim: int = 512  # residual width
    num_heads: int = 8  # query heads
    num_kv_heads: int = 4  # key/value heads (GQA)
    mlp: Literal["relu2", "swiglu", "leaky_relu2"] = "relu2"  # MLP variant (registry in model.mlp)
    mlp_mult: float = 2.0  # hidden = mlp_mult * model_dim (swiglu: 2/3 of that, rounded to 64)
    mlp_hidden: int = 0  # explicit hidden width; 0 derives it from mlp_mult
    leaky_slope: float = 0.5  # negative slope of leaky_relu2
    tie_embeddings: bool = True  # share tok_emb with the output head
    tied_embed_init_std: float = 0.005  # std of the tied embedding init
    logit_softcap: float = 30.0  # logits = cap * tanh(z / cap)
    rope_base: float = 10000.0  # RoPE base frequency
    qk_gain_init: float = 1.5  # initial per-head query gain
    unet_skips: bool = True  # encoder/decoder skip connections with learned per-dim weights
    # blend each embedding with the previous one; input: x_t + lam * sigmoid(W x_t[:gate_window]) * x_{t-1}
    # (PR #1855's input-dependent gate, W and lam zero-init; smear_init / smear_gated do not apply)
    smear_gate: Literal["off", "scalar", "per_dim", "input"] = "off"
    smear_init: Literal["identity", "half"] = "identity"  # gate logit 3.0 (g~0.95 on x_t) or 0.0 (0.5 mix)
    smear_placement: Literal["pre_norm", "post_norm"] = "pre_norm"  # before or after the embedding RMSNorm
    smear_gated: Literal["current", "previous"] = "current"  # input sigmoid(gate) weights (records: previous)
    bos_id: int = 1  # token that starts a document; smear never crosses it; -1: data marks none
    bigram_buckets: int = 0  # BigramHash table rows; 0 = off
    bigram_dim: int = 128  # BigramHash table width (projected to model_dim)
    bigram_scale_init: float = 0.05  # learned output scale of BigramHash
    bigram_init: Literal["normal_table", "ortho_proj"] = "normal_table"  # ortho_proj: 0 table, orthogonal proj/sqrt(2L)
    module_order: Literal["official", "records"] = "official"  # records: BigramHash/SmearGate built before the blocks
    init: Literal["default", "orthogonal"] = "default"  # init of non-zero-init matrices
    ortho_min_dim: int = 64  # orthogonal init skips matrices with a side below this (PR #194: 0, every matrix)
    proj_init_gain: float = 0.0  # >0: orthogonal init of output projections scaled by gain/sqrt(2L)
    resid_mix_init: Literal["default", "phase"] = "default"  # phase: sigmoid(3(i/(L-1)-0.5)) mix
    embed_init: Literal["normal", "overtone"] = "normal"  # overtone: spectrum S_k = S_1 k^-1/2
    # global: the official init from the global RNG in creation order; per_name: every random parameter re-drawn
    # from its own generator seeded by (train.seed, its name), so arms share every common tensor (model/init.py)
    init_seeding: Literal["global", "per_name"] = "global"
    # Parameters whose name contains one of these are control tensors: Adam (never Muon), kept fp32 in the
    # official dtype layout, stored fp32 in the artifact (less export.control_exclude).
    control_patterns: tuple[str, ...] = DEFAULT_CONTROL_PATTERNS
    # PR #1394 (https://github.com/openai/parameter-golf/pull/1394) techniques, all off by default:
    xsa_last_n: int = 0  # exclusive self-attention (output minus its projection on v) in the last N blocks
    rope_dims: int = 0  # rotate only the first N dims of each head (partial RoPE); 0 = all of head_dim
    ln_scale_by_depth: bool = False  # block i scales its pre-attention/-MLP RMSNorm outputs by 1/sqrt(i + 1)
    skip_gates: bool = False  # U-Net skips mixed by a learned sigmoid gate: lerp(w * skip, x, sigmoid(gate))
    loop_layers: tuple[int, ...] = ()  # contiguous block indices re-run with shared weights (depth recurrence)
    loop_count: int = 0  # extra passes over loop_layers once looping is on (PR #1394's NUM_LOOPS: 2 = 3 passes)
    loop_start_frac: float = 0.5  # looping switches on at this fraction of wallclock (or of iterations)
    # PR #1855 (record 2026-04-27) techniques, all off by default:
    gate_window: int = 12  # residual dims the input-dependent gates read (sparse attention gate, smear "input")
    # per-head attention output gate y_h *= sigmoid(scale * W_h x[:gate_window]), W zero-init (sigmoid 0.5 at
    # init); the parameter is blocks.N.attn.attn_gate_w, which model.control_patterns must name (Adam, fp32)
    sparse_attn_gate: bool = False
    sparse_attn_gate_scale: float = 1.0  # the gate logit's scale (PR #1855's run: 0.5)
    # > 0: decoder blocks with index >= this run as two lanes (attention reads lane 0, the MLP lane 1; each lane
    # = resid_lambda * lane + post_lambdas * (attn_out, mlp_out)), learned lambdas parallel_resid_lambdas (L, 2)
    # = 1.1 and parallel_post_lambdas (L, 2, 2) = 1, which model.control_patterns must name; 0: off (PR #1855: 8)
    parallel_start_layer: int = 0
    parallel_final_lane: Literal["mean", "attn", "mlp"] = "mean"  # the hidden state after the last block
    # PR #1855 document-masked attention (h20d): attention only within each document (from BOS tokens, cut every
    # train_seq_len / eval length tokens) over one packed row: training with data.order="doc_packing", the
    # official-mode evaluation flattened as the record's eval_val does (pgolf.core.model.docmask)
    doc_mask: bool = False

    def __post_init__(self) -> None:
        _check_finite(self, "model")
        for k in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads"):
            _check(getattr(self, k) > 0, f"model.{k}", f"expected a positive integer, got {getattr(self, k)}")
        _check(self.model_dim % self.num_heads == 0, "model.num_heads",
               f"must divide model_dim={self.model_dim}, got {self.num_heads}")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads",
               f"must divide num_heads={self.num_heads}, got {self.num_kv_heads}")
        _check((self.model_dim // self.num_heads) % 2 == 0, "model.num_heads",
               "head_dim = model_dim / num_heads must be even for RoPE")
        _check(self.mlp_mult > 0, "model.mlp_mult", f"expected > 0, got {self.mlp_mult}")
        _check(self.mlp_hidden >= 0, "model.mlp_hidden", f"expected >= 0, got {self.mlp_hidden}")
        _check(self.logit_softcap > 0, "model.logit_softcap", f"expected > 0, got {self.logit_softcap}")
        _check(self.rope_base > 0, "model.rope_base", f"expected > 0 (RoPE base frequency), got {self.rope_base}")
        _check(self.tied_embed_init_std >= 0, "model.tied_embed_init_std",
               f"expected >= 0 (a standard deviation), got {self.tied_embed_init_std}")
        _check(self.proj_init_gain >= 0, "model.proj_init_gain", f"expected >= 0, got {self.proj_init_gain}")
        _check(self.bos_id >= -1, "model.bos_id", f"expected -1 (none) or a token id, got {self.bos_id}")
        _check(self.bigram_buckets >= 0, "model.bigram_buckets", f"expected >= 0, got {self.bigram_buckets}")
        _check(self.ortho_min_dim >= 0, "model.ortho_min_dim", f"expected >= 0, got {self.ortho_min_dim}")
        _check(self.bos_id < self.vocab_size, "model.bos_id", f"expected < vocab_size, got {self.bos_id}")
        self.control_patterns = tuple(self.control_patterns)
        # an empty pattern is a substring of every name: every parameter would be a control tensor
        _check(all(isinstance(p, str) and p for p in self.control_patterns), "model.control_patterns",
               f"expected non-empty name substrings, got {list(self.control_patterns)}")
        hd = self.model_dim // self.num_heads
        _check(0 <= self.rope_dims <= hd and self.rope_dims % 2 == 0, "model.rope_dims",
               f"expected an even number in [0, head_dim={hd}], got {self.rope_dims}")
        _check(0 <= self.xsa_last_n <= self.num_layers, "model.xsa_last_n",
               f"expected in [0, num_layers={self.num_layers}], got {self.xsa_last_n}")
        self.loop_layers = tuple(self.loop_layers)
        _check(0 <= self.parallel_start_layer < self.num_layers, "model.parallel_start_layer",
               f"expected 0 (off) or a block index below num_layers={self.num_layers}, got {self.parallel_start_layer}")
        missing = [n for n in ("parallel_resid_lambdas", "parallel_post_lambdas")
                   if not any(p in n for p in self.control_patterns)]
        _check(not self.parallel_start_layer or not missing, "model.parallel_start_layer",
               f"needs model.control_patterns entries matching {missing} (fp32, Adam, as the record trains them)")
        _check(0 < self.gate_window <= self.model_dim, "model.gate_window",
               f"expected in [1, model_dim={self.model_dim}], got {self.gate_window}")
        _check(not self.sparse_attn_gate or any(p in "attn_gate_w" for p in self.control_patterns),
               "model.sparse_attn_gate", "needs a model.control_patterns entry matching attn_gate_w (the record "
               "trains the gate with Adam like the other control tensors), e.g. add 'attn_gate_w'")
        ll = self.loop_layers
        _check(not ll or (list(ll) == list(range(ll[0], ll[-1] + 1)) and 0 <= ll[0] and ll[-1] < self.num_layers),
               "model.loop_layers",
               f"expected contiguous increasing block indices < {self.num_layers}, got {list(ll)}")
        _check(self.loop_count >= 0, "model.loop_count", f"expected >= 0, got {self.loop_count}")
        _check(bool(ll) == (self.loop_count > 0), "model.loop_count",
               f"loop_layers and loop_count go together, got loop_layers={list(ll)} loop_count={self.loop_count}")
        _check(not ll or self.unet_skips, "model.loop_layers", "depth recurrence needs model.unet_skips=true")
        _check(0 <= self.loop_start_frac < 1, "model.loop_start_frac",
               f"expected in [0, 1), got {self.loop_start_frac}")
        if self.bigram_buckets and self.bigram_init == "ortho_proj":
            # The records zero the table; without an orthogonal projection both stay zero and never train.
            _check(self.init == "orthogonal", "model.bigram_init",
                   f"'ortho_proj' needs model.init='orthogonal', got {self.init!r}")
            _check(min(self.bigram_dim, self.model_dim) >= 64, "model.bigram_init",
                   f"'ortho_proj' needs bigram_dim and model_dim >= 64 (orthogonal init), got {self.bigram_dim}")


@dataclass
class DataConfig:
    path: str = ""  # folder with shards; "" = the embedded default dataset (pgolf data build)
    train_pattern: str = "fineweb_train_*.bin"  # train shard glob inside path
    val_pattern: str = "fineweb_val_*.bin"  # validation shard glob inside path
    tokenizer_path: str = ""  # SentencePiece .model; "" = <path>/tokenizer.model or the manifest's
    # Train batch order: "sequential" = the official stream; "permuted" = blocks of train_seq_len + 1 tokens
    # in a per-epoch permutation seeded by (order_seed, epoch), apart from train.seed (pgolf.core.data.permuted);
    # "record_shuffled" = PR #1394's per-rank random windows of the rank's own shards (pgolf.core.data.shuffled).
    # "doc_packing" = PR #1855's packed rows of documents from BOS, with cu_seqlens (pgolf.core.data.packing).
    order: Literal["sequential", "permuted", "record_shuffled", "doc_packing"] = "sequential"
    order_seed: int = 0  # seed of the permuted / record_shuffled order (ignored by "sequential")
    # PR #1855 CaseOps (h20d): val_bpb from the per-token byte sidecar fineweb_val_bytes_*.bin, which must exist
    # (pgolf.core.data.sidecar); a dataset with a sidecar, or whose manifest records caseops, is refused without it
    caseops: bool = False

    def __post_init__(self) -> None:
        _check(self.order in ("sequential", "permuted", "record_shuffled", "doc_packing"), "data.order",
               f"expected 'sequential', 'permuted', 'record_shuffled' or 'doc_packing', got {self.order!r}")
        _check(isinstance(self.order_seed, int) and not isinstance(self.order_seed, bool) and self.order_seed >= 0,
               "data.order_seed", f"expected an integer >= 0, got {self.order_seed!r}")


@dataclass
class TrainConfig:
    seed: int = 1337
    iterations: int = 20000  # optimizer steps (upper bound when a wallclock cap is set)
    train_batch_tokens: int = 524_288  # global tokens per optimizer step
    train_seq_len: int = 1024  # tokens per training sequence
    grad_accum_steps: int = 0  # micro-batches per step and rank; 0 = 8 // world_size (official rule)
    max_wallclock_seconds: float = 600.0  # training-time cap; 0 = none (iteration-based schedule)
    warmup_steps: int = 20  # compile-priming steps, state restored afterwards (not an LR warmup)
    val_loss_every: int = 1000  # steps between validations; 0 = only at the end
    val_batch_size: int = 524_288  # validation tokens per batch (global)
    train_log_every: int = 200  # steps between train-loss log lines
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA, off for CPU
    num_threads: int = 0  # torch threads on CPU; 0 = 1 per process (measured fastest here)
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0 = none
    save_raw_model: bool = True  # write final_model.pt (unquantized) into the run folder
    float64: bool = False  # CPU only: train and score in float64 after the usual init (the behaviour fingerprint's
    #                        numerics reference: no float32 rounding for CPU kernels to disagree on)

    def __post_init__(self) -> None:
        _check_finite(self, "train")
        _check_seed(self.seed, "train.seed")
        for k in ("iterations", "train_batch_tokens", "train_seq_len", "val_batch_size"):
            _check(getattr(self, k) > 0, f"train.{k}", f"expected a positive integer, got {getattr(self, k)}")
        for k in ("grad_accum_steps", "warmup_steps", "val_loss_every", "train_log_every",
                  "num_threads", "checkpoint_every"):
            _check(getattr(self, k) >= 0, f"train.{k}", f"expected >= 0, got {getattr(self, k)}")
        _check(self.max_wallclock_seconds >= 0, "train.max_wallclock_seconds",
               f"expected >= 0, got {self.max_wallclock_seconds}")


@dataclass
class OptimConfig:
    matrix_lr: float = 0.04  # Muon LR for 2-D block matrices
    scalar_lr: float = 0.04  # Adam LR for vectors, scalars and control tensors
    tied_embed_lr: float = 0.05  # Adam LR of the tied embedding
    embed_lr: float = 0.6  # Adam LR of an untied embedding
    head_lr: float = 0.008  # Adam LR of an untied head
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5  # Newton-Schulz iterations
    muon_ns_dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bf16 on CUDA (official), fp32 on CPU
    muon_weight_decay: float = 0.0  # decoupled: p *= 1 - lr_t * wd, before the update
    adam_weight_decay: float = 0.0  # decoupled WD on the Adam groups (embedding and scalars)
    embed_weight_decay: float = -1.0  # decoupled WD of the token embedding's Adam; < 0: adam_weight_decay
    muon_row_normalize: bool = False  # MuonEq-R (PR #1394): divide each row of the update by its norm before NS
    # Newton-Schulz coefficients: the official fixed quintic, or Polar Express's per-iteration ones (PR #1855;
    # at most 5 iterations: muon_backend_steps above 5 still runs 5)
    muon_ns_coeffs: Literal["official", "polar_express"] = "official"
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.0  # global-norm clip over all parameters; 0 = off
    smear_beta2: float = 0.0  # >0: the SmearGate gate gets its own Adam, betas (beta1, this) (PR #194: 0.99)
    # Muon's step precision (PR #1855's record): "grad" keeps the momentum in the gradient's dtype (official);
    # "bf16" casts the gradient to bf16, keeps the momentum in bf16 and applies the shape scale in the fp32 add
    muon_momentum_dtype: Literal["grad", "bf16"] = "grad"

    def __post_init__(self) -> None:
        _check_finite(self, "optim")
        for k in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr",
                  "muon_weight_decay", "adam_weight_decay", "grad_clip_norm"):
            _check(getattr(self, k) >= 0, f"optim.{k}", f"expected >= 0, got {getattr(self, k)}")
        for k in ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2", "smear_beta2"):
            _check(0 <= getattr(self, k) < 1, f"optim.{k}", f"expected in [0, 1), got {getattr(self, k)}")
        _check(self.muon_backend_steps > 0, "optim.muon_backend_steps", "expected > 0")
        _check(self.muon_momentum_warmup_steps >= 0, "optim.muon_momentum_warmup_steps",
               f"expected >= 0, got {self.muon_momentum_warmup_steps}")
        _check(self.adam_eps > 0, "optim.adam_eps", f"expected > 0 (Adam's epsilon), got {self.adam_eps}")
        # embed_weight_decay < 0 is the sentinel "same as adam_weight_decay"; it only has to be finite (above)


@dataclass
class ScheduleConfig:
    warmdown: Literal["linear", "cosine"] = "linear"  # shape of the LR decay
    warmdown_iters: int = 1200  # decay length in steps (converted to wallclock under a cap)
    warmdown_frac: float = 0.0  # >0: decay over this fraction of wallclock (or iterations) instead
    min_lr_frac: float = 0.0  # floor of the LR multiplier
    warmdown_cap_frac: float = 0.0  # >0: a wallclock warmdown lasts at most this fraction of the cap (PR #326: 0.5)

    def __post_init__(self) -> None:
        _check_finite(self, "schedule")
        _check(self.warmdown_iters >= 0, "schedule.warmdown_iters", "expected >= 0")
        _check(0 <= self.warmdown_cap_frac <= 1, "schedule.warmdown_cap_frac",
               f"expected in [0, 1], got {self.warmdown_cap_frac}")
        _check(0 <= self.warmdown_frac <= 1, "schedule.warmdown_frac", f"expected in [0, 1], got {self.warmdown_frac}")
        _check(0 <= self.min_lr_frac < 1, "schedule.min_lr_frac", f"expected in [0, 1), got {self.min_lr_frac}")


BITS = (4, 5, 6, 7, 8)
QAT_CLASSES = ("attn", "mlp", "other")


@dataclass
class QATConfig:
    enabled: bool = False  # straight-through fake quantization with the export quantizer
    start_frac: float = 0.0  # switch on at this fraction of wallclock (or of iterations without a cap)
    scope: tuple[str, ...] = QAT_CLASSES  # tensor classes fake-quantized (of the matrices exported as ints)
    bits: int = 0  # 0: each class's export bits; else this width for every fake-quantized matrix
    # The quantizer. "export" (pgolf): exactly the export's codes and fp16-stored scales, so QAT trains on
    # the weights the artifact will hold. Any other value gives a PR-style quantizer computed in fp32.
    clip: Literal["export", "quantile", "amax"] = "export"  # per-row clip value
    scale_floor: Literal["export", "qmax", "none"] = "export"  # qmax: scale >= 1/qmax; none: max(clip,1e-12)/qmax
    scale_dtype: Literal["export", "fp32", "fp16"] = "export"  # dtype of the scale the codes are computed with
    cast_first: bool = False  # quantize weight.to(activation dtype) (bf16 under autocast) as PR #128; off: fp32

    def __post_init__(self) -> None:
        _check_finite(self, "qat")
        _check(0 <= self.start_frac < 1, "qat.start_frac", f"expected in [0, 1), got {self.start_frac}")
        self.scope = tuple(self.scope)
        bad = sorted(set(self.scope) - set(QAT_CLASSES))
        _check(not bad, "qat.scope", f"expected classes among {list(QAT_CLASSES)}, got {bad}")
        _check(self.bits == 0 or self.bits in BITS, "qat.bits", f"expected 0 or one of {BITS}, got {self.bits}")

    @property
    def own_quantizer(self) -> bool:
        """True when QAT uses its own (PR-style) quantizer rather than the export's."""
        return (self.clip, self.scale_floor, self.scale_dtype) != ("export", "export", "export")


@dataclass
class AveragingConfig:
    mode: Literal["none", "swa", "ema"] = "none"
    swa_start_lr_scale: float = 0.5  # SWA collects once the LR multiplier falls below this
    swa_every: int = 50  # steps between SWA snapshots
    # which number must divide by swa_every: "done" = steps finished (pgolf, PR #314/#326: 50, 100, ...);
    # "index" = the 0-based index of the step just taken (PR #194: snapshots after 1, 51, 101, ... steps)
    swa_step: Literal["done", "index"] = "done"
    swa_min_snapshots: int = 1  # apply the SWA average only with at least this many snapshots (records: 2)
    swa_dtype: Literal["fp32", "param"] = "fp32"  # sum snapshots in fp32, or in each tensor's dtype (records: bf16 emb)
    ema_decay: float = 0.997

    def __post_init__(self) -> None:
        _check_finite(self, "averaging")
        _check(self.swa_every > 0, "averaging.swa_every", "expected > 0")
        _check(self.swa_min_snapshots >= 1, "averaging.swa_min_snapshots",
               f"expected >= 1, got {self.swa_min_snapshots}")
        _check(0 < self.ema_decay < 1, "averaging.ema_decay", f"expected in (0, 1), got {self.ema_decay}")


# Valid export.level per compressor (what zlib, zstandard and lzma presets accept); -1 picks the default.
COMPRESSION_LEVELS = {"zlib": (0, 9), "zstd": (1, 22), "lzma": (0, 9), "brotli": (0, 11)}


@dataclass
class ExportConfig:
    bits_attn: int = 8  # bits for attention matrices (c_q, c_k, c_v, proj)
    bits_mlp: int = 8  # bits for MLP matrices
    bits_other: int = 8  # bits for other large matrices (embedding when not fp16, bigram, head)
    embed_fp16: bool = False  # keep the tied embedding as fp16 passthrough
    # per-row clip value: a quantile of |w|, max |w|, or sdclip (PR #1394): k * the row's standard deviation
    clip: Literal["quantile", "amax", "sdclip"] = "quantile"
    # the embedding / head class's clip: "same" = export.clip; else this rule for that class alone, so a study can
    # vary the matrices' clip with the embedding's held fixed (pgolf.research.rate_distortion)
    clip_embed: Literal["same", "quantile", "amax", "sdclip"] = "same"
    clip_quantile: float = 0.9999984  # official INT8_CLIP_PERCENTILE / 100
    sdclip_sigmas_matrix: float = 12.85  # clip=sdclip: k for every int matrix but the embedding (PR #1394's)
    sdclip_sigmas_embed: float = 20.0  # clip=sdclip: k for the embedding / head class (PR #1394's)
    sdclip_sigmas_attn: float = 0.0  # clip=sdclip: k for attention matrices; 0: sdclip_sigmas_matrix (PR #1855: 13)
    sdclip_sigmas_mlp: float = 0.0  # clip=sdclip: k for MLP matrices; 0: sdclip_sigmas_matrix (PR #1855: 11.5)
    # true: 2-D tensors named *.attn_gate_w of 32..8192 elements are stored as int8 codes with per-row fp16 scales
    # (row max / 127), before the small-tensor and control rules (PR #1855's GATED_ATTN_QUANT_GATE); false: the
    # usual rules (control: fp32)
    gate_int8: bool = False
    # LQER (PR #1855, pgolf.core.lqer): > 0: the lqer_top_k int tensors with the largest quantization error get a
    # rank-lqer_rank correction of that error, stored quantized (record: rank 4, top 3, asym group 64)
    lqer_rank: int = 0
    lqer_top_k: int = 3
    lqer_factor_bits: int = 4  # the symmetric factor codes' width (when the asym packing does not apply)
    lqer_asym_group: int = 64  # > 0: A 2-bit with one scale, B 4-bit in groups of this many; 0: symmetric
    # rtn: round to nearest; gptq: full-Hessian GPTQ (PR #1394) for 2-D int tensors with a calibration Hessian
    quantizer: Literal["rtn", "gptq"] = "rtn"
    gptq_damp: float = 0.01  # added to the Hessian's diagonal, as a fraction of its mean diagonal
    gptq_block_size: int = 128  # columns per lazy-update block
    gptq_act_order: bool = True  # quantize columns by descending Hessian diagonal (PR #1394); false: in order
    gptq_calibration_batches: int = 64  # training micro-batches whose activations make the Hessians (per rank)
    # with quantizer=gptq and a wallclock cap, training stops this much earlier so that calibration fits in the
    # budget (PR #1394's GPTQ_RESERVE_SECONDS); the schedule's progress is measured against the shortened cap
    gptq_reserve_seconds: float = 12.0
    scale_floor: bool = True  # scale >= 1/qmax (official); off: scale >= fp16 tiny (relative grid for tiny rows)
    scale_dtype: Literal["fp32", "fp16"] = "fp32"  # scale the codes are computed with (always stored fp16)
    # scale_floor=false: floor the scale at 1e-10, so a row with clip / qmax < 6.1e-5 keeps an fp16 subnormal
    # scale (PR #1394's GPTQ); off: floored at fp16's smallest normal (pgolf: a relative grid for tiny rows)
    scale_subnormal: bool = False
    keep_float_max_numel: int = 65_536  # float tensors this small pass through unquantized (fp16)
    # model.control_patterns the export does NOT store as control tensors (they take the ordinary rules:
    # small -> fp16, large -> int); reproduces PR #194's export list, which lacks "smear"
    control_exclude: tuple[str, ...] = ()
    control_fp32: bool = True  # control check before the small-tensor rule; False: records' order (bug 9)
    fp16_patterns: tuple[str, ...] = ()  # name substrings kept as fp16 passthrough (e.g. "blocks.9.attn.c_k")
    prune_frac: float = 0.0  # zero this fraction of smallest-|w| entries of each pruned matrix
    prune_frac_mlp: float = -1.0  # fraction for ".mlp." matrices; -1: same as prune_frac
    prune_scope: Literal["quantized", "matrices"] = "quantized"  # int-exported matrices, or all 2-D floats
    prune_min_numel: int = 65_536  # "matrices" scope: only tensors with more elements than this
    prune_rule: Literal["kthvalue", "quantile"] = "kthvalue"  # |w| <= k-th smallest, or |w| < torch.quantile
    # brotli: PR #1394's byte shuffle (stride 2) then brotli (needs the brotli package); pergroup: PR #1855's
    # lrzip ZPAQ per group of code matrices + brotli for the rest (pgolf.core.pergroup; needs the lrzip binary)
    compressor: Literal["zlib", "zstd", "lzma", "brotli", "pergroup"] = "zlib"
    level: int = -1  # -1: default (zlib 9, zstd 22, lzma 9|EXTREME, brotli 11); else zlib/lzma 0..9, zstd 1..22, brotli 0..11
    bitpack: bool = False  # pack sub-8-bit codes densely before compression
    # true: an over-cap run (artifact + code bytes > 16,000,000) still writes summary.json with fits_16mb
    # false, but is marked failed and the process exits non-zero; false: it finishes with an over_cap: log line
    require_fit: bool = False

    def __post_init__(self) -> None:
        _check_finite(self, "export")
        for k in ("bits_attn", "bits_mlp", "bits_other"):
            _check(getattr(self, k) in BITS, f"export.{k}", f"expected one of {BITS}, got {getattr(self, k)}")
        _check(0 < self.clip_quantile <= 1, "export.clip_quantile", "expected in (0, 1]")
        for k in ("sdclip_sigmas_matrix", "sdclip_sigmas_embed"):
            _check(getattr(self, k) > 0, f"export.{k}", f"expected > 0, got {getattr(self, k)}")
        for k in ("sdclip_sigmas_attn", "sdclip_sigmas_mlp"):
            _check(getattr(self, k) >= 0, f"export.{k}", f"expected >= 0 (0: sdclip_sigmas_matrix), got "
                                                          f"{getattr(self, k)}")
        _check(self.clip != "sdclip" or not self.scale_floor, "export.scale_floor",
               "export.clip=sdclip needs export.scale_floor=false (the 1/qmax floor overrides the sigma clip "
               "of every row whose std is below 1/sigmas)")
        _check(self.clip_embed != "sdclip" or not self.scale_floor, "export.scale_floor",
               "export.clip_embed=sdclip needs export.scale_floor=false (the 1/qmax floor overrides the sigma "
               "clip of every row whose std is below 1/sigmas)")
        _check(not (self.scale_subnormal and self.scale_floor), "export.scale_subnormal",
               "export.scale_subnormal=true needs export.scale_floor=false (the 1/qmax floor is far above it)")
        for k in ("lqer_rank", "lqer_top_k", "lqer_asym_group"):
            _check(getattr(self, k) >= 0, f"export.{k}", f"expected >= 0, got {getattr(self, k)}")
        _check(2 <= self.lqer_factor_bits <= 8, "export.lqer_factor_bits",
               f"expected in [2, 8], got {self.lqer_factor_bits}")
        _check(self.gptq_damp >= 0, "export.gptq_damp", f"expected >= 0, got {self.gptq_damp}")
        _check(self.gptq_block_size >= 1, "export.gptq_block_size", f"expected >= 1, got {self.gptq_block_size}")
        _check(self.gptq_calibration_batches >= 1, "export.gptq_calibration_batches",
               f"expected >= 1, got {self.gptq_calibration_batches}")
        _check(self.gptq_reserve_seconds >= 0, "export.gptq_reserve_seconds",
               f"expected >= 0, got {self.gptq_reserve_seconds}")
        _check(0 <= self.prune_frac < 1, "export.prune_frac", f"expected in [0, 1), got {self.prune_frac}")
        _check(self.prune_frac_mlp == -1.0 or 0 <= self.prune_frac_mlp < 1, "export.prune_frac_mlp",
               f"expected -1 (same as prune_frac) or a value in [0, 1), got {self.prune_frac_mlp}")
        _check(self.prune_min_numel >= 0, "export.prune_min_numel", f"expected >= 0, got {self.prune_min_numel}")
        lo, hi = COMPRESSION_LEVELS.get(self.compressor, (-1, -1))
        _check(self.level == -1 or lo <= self.level <= hi, "export.level",
               f"expected -1 (default) or {lo}..{hi} for export.compressor={self.compressor}, got {self.level}")
        self.control_exclude = tuple(self.control_exclude)
        self.fp16_patterns = tuple(self.fp16_patterns)
        _check(all(self.fp16_patterns), "export.fp16_patterns", "expected non-empty name substrings")

    def prune_frac_for(self, name: str) -> float:
        return self.prune_frac_mlp if self.prune_frac_mlp >= 0 and ".mlp." in name else self.prune_frac


@dataclass
class EvalConfig:
    seq_len: int = 0  # evaluation sequence length; 0 = train_seq_len
    stride: int = 0  # sliding-window stride; 0 = non-overlapping windows
    # drop: official (non-overlapping: the tail shorter than seq_len unscored; sliding windows still reach the
    # end of the stream); score: non-overlapping windows score the tail too; truncate: the stream is first cut
    # to a multiple of the eval seq_len (PR #1394's validation loader), so sliding windows skip the tail as well
    tail: Literal["drop", "score", "truncate"] = "drop"
    window_rule: Literal["once", "rescore_tail", "full_windows"] = "once"  # sliding: each target once, PR #128's
    #   tail rule, or PR #326's full windows only (its tail unscored)
    ntk: bool = True  # NTK-aware RoPE base when seq_len exceeds the real training length
    batch_seqs: int = 32  # windows per forward in sliding evaluation
    max_tokens: int = 0  # score only the first N validation tokens (CPU smoke runs); 0 = all (official)
    # -- phased score-first LoRA test-time training (PR #1855; pgolf.core.ttt): an extra score of the quantized
    #    model after the final evaluation. Defaults are the record's defaults; its run command sets chunk 48,
    #    rank 80, beta2 0.99, weight decay 0.5, 2500 prefix docs, 3 phases.
    ttt: Literal["off", "phased_lora"] = "off"
    ttt_lora_rank: int = 96  # rank of each document's LoRA adapters (Q, K, V, O, MLP per block call, lm_head)
    ttt_lora_alpha: float = 144.0  # adapter output scale alpha / rank
    ttt_lora_lr: float = 1e-4  # AdamW learning rate of the adapters
    ttt_warm_start_a: bool = True  # keep A across the documents of a phase (B is zeroed per document batch)
    ttt_chunk_size: int = 48  # tokens scored, then trained on, per step of a document
    ttt_eval_seq_len: int = 2048  # context window (tokens) of a chunk's forward
    ttt_batch_size: int = 64  # documents per batched-adapter forward
    ttt_grad_steps: int = 1  # adapter steps per scored chunk
    ttt_weight_decay: float = 1.0  # AdamW decoupled weight decay of the adapters
    ttt_beta1: float = 0.0
    ttt_beta2: float = 0.999
    ttt_k_lora: bool = True  # adapters on K, the MLP output and the attention output as well as Q, V, lm_head
    ttt_mlp_lora: bool = True
    ttt_o_lora: bool = True
    ttt_prefix_docs: int = 2000  # documents scored before the global phases end; 0: no global phase
    ttt_num_phases: int = 1  # global SGD phases, after prefix_docs * k / num_phases documents (k = 1..num_phases)
    ttt_global_lr: float = 1e-3  # SGD on every weight over the scored prefix documents (cosine over chunks)
    ttt_global_momentum: float = 0.9
    ttt_global_epochs: int = 1
    ttt_global_chunk_tokens: int = 32768  # tokens per LR step of the cosine; the last chunk is not trained on
    ttt_global_batch_seqs: int = 32  # sequences per SGD step
    ttt_global_seq_len: int = 0  # sequence length of the global phase; 0 = eval.seq_len or train_seq_len
    ttt_global_warmup_chunks: int = 0
    ttt_global_warmup_start_lr: float = 0.0
    ttt_global_grad_clip: float = 1.0  # global grad-norm clip; 0 = none

    def __post_init__(self) -> None:
        for name in ("ttt_lora_rank", "ttt_chunk_size", "ttt_eval_seq_len", "ttt_batch_size", "ttt_grad_steps",
                     "ttt_num_phases", "ttt_global_chunk_tokens", "ttt_global_batch_seqs"):
            _check(getattr(self, name) > 0, f"eval.{name}", f"expected > 0, got {getattr(self, name)}")
        for name in ("ttt_prefix_docs", "ttt_global_epochs", "ttt_global_seq_len", "ttt_global_warmup_chunks",
                     "ttt_global_grad_clip", "ttt_lora_lr", "ttt_weight_decay", "ttt_global_lr"):
            _check(getattr(self, name) >= 0, f"eval.{name}", f"expected >= 0, got {getattr(self, name)}")
        for name in ("ttt_beta1", "ttt_beta2", "ttt_global_momentum"):
            _check(0 <= getattr(self, name) < 1, f"eval.{name}", f"expected in [0, 1), got {getattr(self, name)}")
        _check(self.seq_len >= 0, "eval.seq_len", "expected >= 0")
        _check(self.stride >= 0, "eval.stride", "expected >= 0")
        _check(self.batch_seqs > 0, "eval.batch_seqs", "expected > 0")
        _check(self.max_tokens >= 0, "eval.max_tokens", "expected >= 0")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        ev = self.eval
        if ev.stride:
            L = ev.seq_len or self.train.train_seq_len
            _check(ev.stride <= L, "eval.stride", f"expected <= eval seq_len {L}, got {ev.stride}")
        _check(ev.window_rule == "once" or 0 < ev.stride < (ev.seq_len or self.train.train_seq_len),
               "eval.window_rule", f"{ev.window_rule!r} needs sliding windows (0 < eval.stride < eval seq_len)")
        _check(ev.ttt == "off" or self.model.bos_id >= 0, "eval.ttt",
               f"{ev.ttt!r} reads documents from BOS tokens: expected model.bos_id >= 0, got {self.model.bos_id}")
        unknown = [p for p in self.export.control_exclude if p not in self.model.control_patterns]
        _check(not unknown, "export.control_exclude",
               f"expected patterns of model.control_patterns {list(self.model.control_patterns)}, got {unknown}")
        _check(not self.model.doc_mask or self.data.order == "doc_packing", "model.doc_mask",
               f"training attends within documents of packed rows: needs data.order='doc_packing', got {self.data.order!r}")
        _check(not self.model.doc_mask or self.model.bos_id >= 0, "model.doc_mask",
               "documents start at BOS tokens: needs model.bos_id >= 0")
        cap, reserve = self.train.max_wallclock_seconds, self.export.gptq_reserve_seconds
        _check(self.export.quantizer != "gptq" or cap == 0 or reserve < cap, "export.gptq_reserve_seconds",
               f"expected less than train.max_wallclock_seconds={cap}, got {reserve}")

    @property
    def training_cap_seconds(self) -> float:
        """The wallclock cap training runs to (0: none): ``train.max_wallclock_seconds``, less
        ``export.gptq_reserve_seconds`` when GPTQ calibrates after training."""
        cap = self.train.max_wallclock_seconds
        if cap > 0 and self.export.quantizer == "gptq":
            return cap - self.export.gptq_reserve_seconds
        return cap

    # -- dict / JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "config") -> "Config":
        return _build(cls, _upgrade_moved_keys(d, where), where)

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        """A resolved config file (a run's ``config.json``, ``--config``). Every section must be there: a missing
        one would silently take today's defaults, not the values the file's writer used, so it is refused.
        Keys missing inside a section (switches added to pgolf after the file was written) take their
        defaults, which by pgolf's rule keep the old behaviour."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        if isinstance(d, Mapping):
            missing = [name for name in _SECTION_TYPES if name not in d]
            if missing:
                raise ConfigError(f"{p}: section(s) {missing} missing; a resolved config holds all of "
                                  f"{list(_SECTION_TYPES)} (a missing section would silently take today's defaults "
                                  f"instead of the values the run used)")
        try:
            return cls.from_dict(d, where=str(p))
        except ConfigError as e:
            raise ConfigError(str(e) if str(e).startswith(str(p)) else f"{p}: {e}") from None

    def replace(self, overrides: Mapping[str, Any] | list[str]) -> "Config":
        """A copy with dotted overrides applied ({'model.num_layers': 11} or ['model.num_layers=11'])."""
        return apply_overrides(self, overrides)


# Keys that moved (old -> new). A config written before the move (a run folder's config.json) still loads,
# with the same meaning; a dotted override with the old name is refused, naming the new one.
MOVED_KEYS = {
    # steered the optimizer, the dtype layout and the export alike, as model.control_patterns does
    "export.control_patterns": "model.control_patterns",
}


def _upgrade_moved_keys(d: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        return d
    out = dict(d)
    for old, new in MOVED_KEYS.items():
        (old_sec, old_name), (new_sec, new_name) = old.split("."), new.split(".")
        src, dst = out.get(old_sec), out.get(new_sec, {})
        if not isinstance(src, Mapping) or old_name not in src or not isinstance(dst, Mapping):
            continue
        if new_name in dst:
            raise ConfigError(f"{where}: both {old} (its old name) and {new} are set; keep only {new}")
        out[old_sec] = {k: v for k, v in src.items() if k != old_name}
        out[new_sec] = {**dst, new_name: src[old_name]}
    return out


_SECTION_TYPES = {
    "model": ModelConfig, "data": DataConfig, "train": TrainConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "qat": QATConfig, "averaging": AveragingConfig,
    "export": ExportConfig, "eval": EvalConfig,
}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


BOOL_TRUE = ("1", "true", "yes", "on")
BOOL_FALSE = ("0", "false", "no", "off")
BOOL_HELP = "expected 0/1/true/false/yes/no/on/off"  # for environment switches


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (possibly a string from the command line or env) to ``tp``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int,)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in BOOL_TRUE + BOOL_FALSE:
            return value.lower() in BOOL_TRUE
        raise ConfigError(f"{key}: expected a boolean ({'/'.join(BOOL_TRUE + BOOL_FALSE)}), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple and typing.get_args(tp)[0] is int:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of integers, got {value!r}")
        return tuple(_coerce(v, int, key) for v in value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, d: Mapping[str, Any], where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    types = _field_types(cls)
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(types)}")
    kwargs = {}
    for name, value in d.items():
        if cls is Config:
            kwargs[name] = _build(_SECTION_TYPES[name], value, name if where == "config" else f"{where}: {name}")
        else:
            kwargs[name] = _coerce(value, types[name], f"{where}.{name}")
    return cls(**kwargs)


def parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value, e.g. model.num_layers=11")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def apply_overrides(cfg: Config, overrides: Mapping[str, Any] | list[str] | tuple[str, ...]) -> Config:
    """Return a validated copy of ``cfg`` with dotted overrides applied."""
    if isinstance(overrides, (list, tuple)):
        overrides = dict(parse_override(o) for o in overrides)
    d = cfg.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in _SECTION_TYPES:
            raise ConfigError(
                f"override {key!r}: expected section.key with section one of {sorted(_SECTION_TYPES)}"
            )
        section, name = parts
        types = _field_types(_SECTION_TYPES[section])
        if key in MOVED_KEYS:
            raise ConfigError(f"override {key!r}: moved to {MOVED_KEYS[key]}")
        if name not in types:
            raise ConfigError(f"override {key!r}: unknown key {name!r} in {section}; expected one of {sorted(types)}")
        d[section][name] = _coerce(value, types[name], key)
    return Config.from_dict(d)


# The environment mapping lives in its own module; imported last (it reads the names above).
from pgolf.core.config_env import ENV_KEYS, ENV_SPECIAL, env_names, env_overrides, from_env  # noqa: F401
