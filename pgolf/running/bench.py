"""Step time, throughput, FLOPs, MFU and memory of the trainer's own step on synthetic tokens.

``pgolf bench PRESET [overrides] [--steps N] [--warmup N] [--options]`` / :func:`bench` build the model,
optimizers and (compiled, DDP-free) wrapper with :meth:`pgolf.core.train.Trainer.setup_model` and time the
trainer's own :meth:`~pgolf.core.train.Trainer.step` on uniform random tokens (no dataset needed), on the
current device: bf16 autocast and ``torch.compile`` on CUDA, as ``train.compile`` says on CPU. The trainer's
clock is not running, so the LR schedule reads elapsed time 0.

Model FLOPs per token (training, forward + backward; nanoGPT's ``estimate_mfu`` / PaLM appendix B)::

    flops_per_token = 6 * N_matmul + 12 * num_layers * seq_len * model_dim

``N_matmul`` counts the weights that take part in a matmul for every token: every CastedLinear (attention
q/k/v/out, MLP, BigramHash projection, an untied head) plus the tied embedding once, as the output head.
Embedding and BigramHash table lookups are gathers and count zero. The attention term counts QK^T and AV
over the full ``seq_len`` (the masked half included, as PaLM does), with ``model_dim`` = heads * head_dim;
GQA shrinks K/V projections (already in N_matmul) but not this term. Norms, RoPE, softcap, QAT fake-quant
and the optimizer are not counted. MFU = flops_per_token * tokens_per_s / peak.

Projected 8xH100 step from one GPU: with world_size 1 the official rule runs grad_accum_steps = 8
micro-batches per step; on 8 GPUs each rank runs one of them and orthogonalizes 1/8 of Muon's matrices,
so the projection is ``step_ms / 8 + allreduce_ms``, where allreduce_ms is a ring all-reduce
(2 * 7/8 * bytes) of the fp32 gradients plus Muon's bf16 update buffer at ``ASSUMED_BUS_GBPS``, assumed not
overlapped with compute. The parts that do not shrink (Adam on every rank, the per-step ``.item()`` sync,
kernel launch overheads) make the real step somewhat slower than this.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import torch

from pgolf.core.averaging import WeightAverager
from pgolf.core.config import Config, ConfigError, apply_overrides
from pgolf.core.evaluate import ByteLUTs, eval_windows
from pgolf.core.model.layers import CastedLinear
from pgolf.core.train import Trainer

FLOPS_FORMULA = "6 * N_matmul + 12 * num_layers * seq_len * model_dim"
# Dense bf16 tensor-core peaks from the NVIDIA datasheets (SXM parts, no sparsity).
PEAK_FLOPS = {"H100 SXM bf16 dense": 989e12, "H200 bf16 dense": 989e12}
ASSUMED_BUS_GBPS = 360.0  # NCCL all-reduce bus bandwidth on 8x H100 SXM (NVLink 4), large messages
OFFICIAL_GPUS = 8
LOOP = "loop"  # ``pgolf bench loop``: the research-loop bench of pgolf.running.bench_loop, not a preset


# -- counting ---------------------------------------------------------------------------------------


def matmul_params(model: torch.nn.Module) -> int:
    """Weights used in a matmul for every token: all CastedLinear weights + a tied embedding as the head."""
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, CastedLinear))
    if getattr(model, "lm_head", None) is None:
        n += model.tok_emb.weight.numel()
    return n


def flops_per_token(cfg: Config, n_matmul: int) -> int:
    """Training FLOPs per token: ``6 * N_matmul + 12 * num_layers * seq_len * model_dim``."""
    m = cfg.model
    return 6 * n_matmul + 12 * m.num_layers * cfg.train.train_seq_len * m.model_dim


def device_peak(device: torch.device) -> tuple[float | None, str]:
    """(peak FLOP/s, where it comes from) for the device this process runs on."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAK_FLOPS.items():
            if key.split()[0] in name:
                return peak, f"{key} (datasheet)"
        return None, f"{name}: no peak in pgolf.running.bench.PEAK_FLOPS"
    return measure_cpu_peak(), f"fp32 GEMM measured here ({torch.get_num_threads()} threads)"


def measure_cpu_peak(n: int = 1024, seconds: float = 0.5) -> float:
    """Attainable fp32 FLOP/s of this CPU: repeated n x n matmuls at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kb / 1024, "process max RSS (includes torch itself)"


# -- the step ---------------------------------------------------------------------------------------


class SyntheticTokens:
    """Stands in for DistributedTokenLoader: uniform random tokens, a few fixed batches cycled."""

    def __init__(self, vocab_size: int, device: torch.device, seed: int = 0, pool: int = 4):
        self.vocab_size, self.device, self.pool = vocab_size, device, pool
        self.gen = torch.Generator().manual_seed(seed)
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.i = 0

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.batches) < self.pool:
            local = global_tokens // grad_accum_steps
            t = torch.randint(0, self.vocab_size, (local + 1,), generator=self.gen)
            self.batches.append((t[:-1].reshape(-1, seq_len).to(self.device),  # (local // seq_len, seq_len)
                                 t[1:].reshape(-1, seq_len).to(self.device)))
        self.i += 1
        return self.batches[(self.i - 1) % len(self.batches)]


def build_trainer(cfg: Config, qat: bool = False, loader: Any = None) -> Trainer:
    """A Trainer whose model, compiled wrapper, optimizers, averager and QAT controller are set up as in a run
    (:meth:`Trainer.setup_model`), without data or a run folder; ``loader`` feeds its steps. ``qat``: QAT on
    from the start (through the trainer's QAT controller)."""
    tr = Trainer(cfg, None, resume=False, console=False)
    tr.setup_model(loader=loader)
    if qat:
        tr.qat.switch_on(0)
    return tr


def _timed_steps(tr: Trainer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        tr.sync()
        t0 = time.perf_counter()
        tr.step()
        tr.sync()
        out.append(1000.0 * (time.perf_counter() - t0))
    return out


def bench(cfg: Config, steps: int = 10, warmup: int = 3, *, qat: bool | None = None) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup`` untimed ones; returns the numbers (see module doc).

    ``qat``: fake quantization active for the whole bench (default: when ``qat.enabled``; the trainer
    switches it on at ``qat.start_frac``, so this times its expensive phase).
    """
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps ({steps}) and warmup ({warmup}) must be >= 1 (the first step is timed apart)")
    qat = cfg.qat.enabled if qat is None else qat
    if not qat:  # otherwise the trainer's QAT controller would switch it on at qat.start_frac
        cfg = apply_overrides(cfg, {"qat.enabled": False})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tr = build_trainer(cfg, qat=qat)
    device = tr.d.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tr.loader = SyntheticTokens(cfg.model.vocab_size, device, seed=cfg.train.seed)
    first_ms = _timed_steps(tr, 1)[0]
    _timed_steps(tr, warmup - 1)
    times = sorted(_timed_steps(tr, steps))
    step_ms = sum(times) / len(times)
    tokens_per_step = cfg.train.train_batch_tokens // tr.d.world_size
    n_matmul = matmul_params(tr.base)
    fpt = flops_per_token(cfg, n_matmul)
    tokens_per_s = tokens_per_step / (step_ms / 1000.0)
    peak, peak_source = device_peak(device)
    mem_mb, mem_source = peak_memory_mb(device)
    m = cfg.model
    out: dict[str, Any] = {
        "device": device.type, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "compile": tr.compiled, "autocast_bf16": tr.use_autocast, "qat_active": qat,
        "world_size": tr.d.world_size, "grad_accum_steps": tr.accum, "steps": steps, "warmup": warmup,
        "step_ms": step_ms, "step_ms_median": times[len(times) // 2], "step_ms_min": times[0],
        "first_step_ms": first_ms, "compile_ms": first_ms - step_ms if tr.compiled else None,
        "tokens_per_step": tokens_per_step, "tokens_per_s": tokens_per_s,
        "model_params": sum(p.numel() for p in tr.base.parameters()), "matmul_params": n_matmul,
        "flops_per_token": fpt, "flops_formula": FLOPS_FORMULA,
        "flops_formula_values": f"6 * {n_matmul} + 12 * {m.num_layers} * {cfg.train.train_seq_len} * {m.model_dim}",
        "achieved_flops": fpt * tokens_per_s, "peak_flops": peak, "peak_source": peak_source,
        "mfu": fpt * tokens_per_s / peak if peak else None,
        "peak_memory_mb": mem_mb, "peak_memory_source": mem_source,
    }
    out.update(project_8gpu(tr, step_ms))
    return out


def project_8gpu(tr: Trainer, step_ms: float) -> dict[str, Any]:
    """8-GPU step time from a 1-process run whose grad accumulation covers the 8 ranks' micro-batches."""
    if tr.d.world_size != 1 or tr.accum % OFFICIAL_GPUS:
        return {"projected_8gpu_step_ms": None,
                "projection_note": f"needs world_size 1 and grad_accum_steps a multiple of 8 (got {tr.accum})"}
    grad_bytes = sum(p.numel() * p.element_size() for p in tr.base.parameters())
    muon_bytes = 2 * sum(p.numel() for g in tr.muon.param_groups for p in g["params"])
    ring = 2 * (OFFICIAL_GPUS - 1) / OFFICIAL_GPUS
    comm_ms = 1000.0 * ring * (grad_bytes + muon_bytes) / (ASSUMED_BUS_GBPS * 1e9)
    proj = step_ms / OFFICIAL_GPUS + comm_ms
    return {"projected_8gpu_step_ms": proj, "projected_8gpu_comm_ms": comm_ms,
            "projected_8gpu_steps_in_600s": int(600_000 / proj),
            "projection_note": f"step_ms / 8 (each rank 1/8 of the micro-batches and of Muon) + ring all-reduce of "
                               f"{(grad_bytes + muon_bytes) / 1e6:.1f} MB at {ASSUMED_BUS_GBPS:.0f} GB/s, not overlapped"}


# -- option costs -----------------------------------------------------------------------------------

OPTION_ON = {  # what "on" means for an option the config leaves off
    "qat": {"qat.enabled": True},
    "smear_gate": {"model.smear_gate": "per_dim"},
    "bigram_hash": {"model.bigram_buckets": 10240},
}
OPTION_OFF = {"qat": {"qat.enabled": False}, "smear_gate": {"model.smear_gate": "off"},
              "bigram_hash": {"model.bigram_buckets": 0}}


def _option_enabled(cfg: Config, name: str) -> bool:
    return {"qat": cfg.qat.enabled, "smear_gate": cfg.model.smear_gate != "off",
            "bigram_hash": cfg.model.bigram_buckets > 0}[name]


def _median_ms(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(1000.0 * (time.perf_counter() - t0))
    return sorted(ts)[len(ts) // 2]


def bench_options(cfg: Config, steps: int = 10, warmup: int = 3, base: dict[str, Any] | None = None,
                  eval_windows_count: int = 32) -> dict[str, Any]:
    """Step-time cost (median step) of QAT, SmearGate and BigramHash (each: the config with it vs without it), the SWA
    snapshot / EMA update cost, and evaluation throughput with and without a sliding window."""
    base = base or bench(cfg, steps, warmup)
    rows = []
    for name in OPTION_ON:
        on = _option_enabled(cfg, name)
        other = bench(apply_overrides(cfg, OPTION_OFF[name] if on else OPTION_ON[name]), steps, warmup)
        # medians: a shared CPU's stragglers would swamp a few-percent difference in the means
        with_ms, without_ms = ((base["step_ms_median"], other["step_ms_median"]) if on
                               else (other["step_ms_median"], base["step_ms_median"]))
        rows.append({"option": name, "in_config": on, "step_ms_with": with_ms, "step_ms_without": without_ms,
                     "delta_ms": with_ms - without_ms, "delta_pct": 100.0 * (with_ms / without_ms - 1.0)})

    tr = build_trainer(cfg)
    model, device = tr.base, tr.d.device
    swa = WeightAverager(model, apply_overrides(cfg, {"averaging.mode": "swa"}).averaging)
    every = cfg.averaging.swa_every
    swa_ms = _median_ms(lambda: swa.update(model, every, 0.0), 5)
    ema = WeightAverager(model, apply_overrides(cfg, {"averaging.mode": "ema"}).averaging)
    ema_ms = _median_ms(lambda: ema.update(model, 1, 1.0), 5)
    averaging = {"swa_snapshot_ms": swa_ms, "swa_every": every, "swa_ms_per_step": swa_ms / every,
                 "swa_pct_of_step": 100.0 * swa_ms / every / base["step_ms"],
                 "ema_update_ms_per_step": ema_ms, "ema_pct_of_step": 100.0 * ema_ms / base["step_ms"]}

    seq_len = cfg.eval.seq_len or cfg.train.train_seq_len
    stride = cfg.eval.stride or 64
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.model.vocab_size, (seq_len * eval_windows_count + 1,), generator=gen)
    v = cfg.model.vocab_size
    luts = ByteLUTs(torch.ones(v, dtype=torch.int16, device=device), torch.zeros(v, dtype=torch.bool, device=device),
                    torch.zeros(v, dtype=torch.bool, device=device))
    evals = {}
    for label, s in (("non_overlapping", 0), ("sliding", stride)):
        run = lambda s=s: eval_windows(model, tokens, luts, seq_len, s, "drop", cfg.eval.batch_seqs, 0, 1,  # noqa: E731
                                       device, tr.use_autocast)
        res = run()
        ms = _median_ms(run, 2)
        evals[label] = {"stride": s, "seq_len": seq_len, "tokens_scored": res.tokens,
                        "tokens_per_s": res.tokens / (ms / 1000.0), "eval_ms": ms}
    evals["sliding_slowdown"] = evals["non_overlapping"]["tokens_per_s"] / evals["sliding"]["tokens_per_s"]
    return {"options": rows, "averaging": averaging, "eval": evals}


class _FreeForward(torch.nn.Module):
    """Stands in for a model whose forward costs nothing: per-token losses from a fixed table. With it,
    the evaluator's own bookkeeping (window selection, batching, masks, byte counts) is all that is timed,
    which is what dominates a sliding evaluation on a GPU."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.register_buffer("nll", torch.rand(vocab_size, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "none") -> torch.Tensor:
        return self.nll[y].reshape(-1)


def bench_eval(cfg: Config, n_windows: int = 2048) -> dict[str, Any]:
    """Sliding-window evaluation throughput: with the config's model, and with a free forward."""
    tr = build_trainer(cfg)
    device = tr.d.device
    seq_len = cfg.eval.seq_len or cfg.train.train_seq_len
    stride = cfg.eval.stride or 64
    v = cfg.model.vocab_size
    tokens = torch.randint(0, v, (seq_len + stride * (n_windows - 1) + 1,), generator=torch.Generator().manual_seed(0))
    luts = ByteLUTs(torch.ones(v, dtype=torch.int16, device=device), torch.zeros(v, dtype=torch.bool, device=device),
                    torch.zeros(v, dtype=torch.bool, device=device))
    out: dict[str, Any] = {"seq_len": seq_len, "stride": stride, "batch_seqs": cfg.eval.batch_seqs}
    for label, model, count in (("model", tr.base, max(n_windows // 32, 8)), ("free_forward", _FreeForward(v).to(device),
                                                                                n_windows)):
        part = tokens[: seq_len + stride * (count - 1) + 1]
        run = lambda m=model, t=part: eval_windows(m, t, luts, seq_len, stride, "drop", cfg.eval.batch_seqs,  # noqa: E731
                                                    0, 1, device, tr.use_autocast)
        res = run()
        ms = _median_ms(run, 3)
        out[label] = {"windows": count, "tokens_scored": res.tokens, "eval_ms": ms,
                      "tokens_per_s": res.tokens / (ms / 1000.0), "windows_per_s": count / (ms / 1000.0)}
    return out


# -- command line -----------------------------------------------------------------------------------


def format_report(name: str, r: dict[str, Any], opts: dict[str, Any] | None = None) -> str:
    mfu = f"{100 * r['mfu']:.2f}%" if r["mfu"] is not None else "n/a"
    lines = [
        f"bench:{name} device:{r['device_name']} threads:{r['threads']} compile:{int(r['compile'])} "
        f"bf16_autocast:{int(r['autocast_bf16'])} qat:{int(r['qat_active'])} world_size:{r['world_size']} "
        f"grad_accum_steps:{r['grad_accum_steps']}",
        f"step_avg:{r['step_ms']:.2f}ms step_median:{r['step_ms_median']:.2f}ms step_min:{r['step_ms_min']:.2f}ms "
        f"(over {r['steps']} steps after {r['warmup']} warmup)",
        f"tokens_per_step:{r['tokens_per_step']} tokens_per_s:{r['tokens_per_s']:.0f}",
        f"model_params:{r['model_params']} matmul_params:{r['matmul_params']}",
        f"flops_per_token:{r['flops_per_token']} = {r['flops_formula']} = {r['flops_formula_values']}",
        f"achieved_tflops:{r['achieved_flops'] / 1e12:.4f} mfu:{mfu} (peak: {r['peak_source']})",
        f"peak_memory:{r['peak_memory_mb']:.0f}MiB ({r['peak_memory_source']})",
        f"first_step:{r['first_step_ms']:.0f}ms compile_time:"
        + (f"{r['compile_ms']:.0f}ms (first step minus step_avg)" if r["compile_ms"] is not None else "n/a (eager)"),
    ]
    if r["projected_8gpu_step_ms"] is not None:
        lines.append(f"projected_8xH100_step:{r['projected_8gpu_step_ms']:.2f}ms "
                     f"steps_in_600s:{r['projected_8gpu_steps_in_600s']} ({r['projection_note']})")
    else:
        lines.append(f"projected_8xH100_step: n/a ({r['projection_note']})")
    lines.append("peak FLOP/s table:")
    table = {**PEAK_FLOPS, f"this device: {r['peak_source']}": r["peak_flops"]}
    for k, v in table.items():
        lines.append(f"  {k:<52} {v / 1e12:10.3f} TFLOP/s" if v else f"  {k:<52} {'n/a':>10}")
    if opts:
        lines.append("option costs (median step time with vs without, same config otherwise):")
        for row in opts["options"]:
            lines.append(f"  {row['option']:<12} in_config:{int(row['in_config'])} with:{row['step_ms_with']:.2f}ms "
                         f"without:{row['step_ms_without']:.2f}ms delta:{row['delta_ms']:+.2f}ms "
                         f"({row['delta_pct']:+.1f}%)")
        a = opts["averaging"]
        lines.append(f"  swa_snapshot:{a['swa_snapshot_ms']:.2f}ms every {a['swa_every']} steps = "
                     f"{a['swa_ms_per_step']:.3f}ms/step ({a['swa_pct_of_step']:.2f}% of a step)")
        lines.append(f"  ema_update:{a['ema_update_ms_per_step']:.2f}ms/step ({a['ema_pct_of_step']:.1f}% of a step)")
        e = opts["eval"]
        for k in ("non_overlapping", "sliding"):
            lines.append(f"  eval_{k}: stride:{e[k]['stride']} seq_len:{e[k]['seq_len']} "
                         f"tokens_per_s:{e[k]['tokens_per_s']:.0f} ({e[k]['tokens_scored']} tokens in {e[k]['eval_ms']:.0f}ms)")
        lines.append(f"  sliding_eval_slowdown:{e['sliding_slowdown']:.1f}x")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from pgolf.running.cli import resolve_config
    if args.preset == LOOP:
        if args.overrides or args.config:
            raise ConfigError("pgolf bench loop takes no overrides or --config: it runs a research scale's control "
                              "(--scale, --seed)")
        from pgolf.running.bench_loop import cmd_bench_loop
        return cmd_bench_loop(args)
    cfg = resolve_config(args.preset, args.overrides, args.config)
    if args.eval:
        e = bench_eval(cfg, args.eval_windows)
        if args.json:
            print(json.dumps({"eval": e}, indent=2))
        else:
            print(f"bench_eval:{args.preset} device:{torch.device('cuda' if torch.cuda.is_available() else 'cpu')} "
                  f"threads:{torch.get_num_threads()} seq_len:{e['seq_len']} stride:{e['stride']} "
                  f"batch_seqs:{e['batch_seqs']}")
            for k in ("model", "free_forward"):
                print(f"  {k}: windows:{e[k]['windows']} tokens_per_s:{e[k]['tokens_per_s']:.0f} "
                      f"windows_per_s:{e[k]['windows_per_s']:.0f} ({e[k]['tokens_scored']} tokens in "
                      f"{e[k]['eval_ms']:.1f}ms)")
        return 0
    r = bench(cfg, args.steps, args.warmup)
    opts = bench_options(cfg, args.steps, args.warmup, base=r) if args.options else None
    if args.json:
        print(json.dumps({"bench": r, **(opts or {})}, indent=2, default=str))
    else:
        print(format_report(args.preset if not args.config else args.config, r, opts))
    return 0


def register(subparsers) -> None:
    from pgolf.running.cli import _add_config_args
    b = subparsers.add_parser("bench", help="time the training step on synthetic tokens: ms/step, tokens/s, "
                                            "FLOPs, MFU, memory, compile time, option costs")
    _add_config_args(b)
    b.add_argument("--steps", type=int, default=10, help="timed steps")
    b.add_argument("--warmup", type=int, default=3, help="untimed steps before (the first one timed apart)")
    b.add_argument("--options", action="store_true",
                   help="also time QAT, SmearGate, BigramHash, SWA/EMA updates and sliding-window evaluation")
    b.add_argument("--eval", action="store_true",
                   help="time only sliding-window evaluation: with the model, and with a free forward (bookkeeping)")
    b.add_argument("--eval-windows", type=int, default=2048, help="windows for --eval's free-forward timing")
    b.add_argument("--json", action="store_true", help="print the numbers as JSON")
    loop = b.add_argument_group(f"pgolf bench {LOOP}: one research-scale run of --baseline-rev and of this working "
                                "tree, side by side, interleaved; CPU and wall time, their ratio, identical scores "
                                "(pgolf.running.bench_loop)")
    loop.add_argument("--baseline-rev", default="HEAD", help="the git revision to compare with (default HEAD)")
    loop.add_argument("--scale", default="micro", help="the research scale whose control run is timed (default micro)")
    loop.add_argument("--seed", type=int, default=0, help="its replicate (train.seed and data.order_seed)")
    loop.add_argument("--rounds", type=int, default=2, help="runs of each variant, order alternating (default 2)")
    loop.add_argument("--study-runs", type=int, default=0, metavar="N",
                      help="time batches of N runs (seeds --seed..--seed+N-1) instead of one: the baseline one "
                           "process per run, the new code one persistent worker; CPU-s per run and the ratio")
    loop.add_argument("--keep", type=Path, help="keep the runs and logs in this folder (default: a temporary one)")
    b.set_defaults(func=cmd_bench)
