"""One training loop for CPU and CUDA, single process or under torchrun.

``train(cfg, run_dir)`` is the whole run as a library call: it trains, validates, averages, exports,
scores the round-tripped artifact and returns the summary it writes to ``summary.json``. The loop
follows the official ``train_gpt.py`` step for step (same token order, schedule, logging lines) and
adds the seed-PR options, checkpoints and failure marking.

:class:`Trainer` is that run as public, documented stages, which ``train`` (through :meth:`Trainer.run`),
``pgolf bench``, ``pgolf doctor`` and the tests call; nothing outside this module uses a private member:

- ``setup()``: seeds, run-folder records, data (checked before the model is built), model, compiled/DDP
  wrapper, optimizers, weight averager, QAT controller, loader, compile priming, resume. Every attribute the
  other stages use is created here (``setup_model()`` alone: what a step needs, without data).
- ``step()``: one optimizer step -> :class:`StepResult`.
- ``evaluate(final)``: the periodic validation, or the final split as scored.
- ``checkpoint()``, ``wallclock_reached()``: what ``run()`` does between steps.
- ``finish()``: average, save raw, export, score, summary.

QAT is switched on and off only by the run's :class:`pgolf.core.qat.QATController`. Tests and tools observe
or inject faults through :class:`TrainerHooks`, never through environment variables or monkeypatches.

Nothing is lost or silent when a run ends early: rank 0 holds the run folder's lock for the whole run;
eval settings that only the data can check are checked before the model is built; the trained (averaged)
weights go to ``final_model.pt`` before export and final scoring (written even with
``train.save_raw_model=false`` when export or scoring then fails); a non-finite final score fails the run
(:class:`NonFiniteScoreError`) instead of finishing with NaN; Ctrl-C marks the run ``interrupted``; a resume
cuts the log and metrics rows the interrupted attempt wrote after its checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Self

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf.core import accounting, gptq, optim
from pgolf.core.averaging import WeightAverager
from pgolf.core.config import Config, ConfigError
from pgolf.core.data.identity import check_same_dataset
from pgolf.core.evaluate import EvalResult, compile_for_eval, eval_official, eval_windows, window_mode
from pgolf.core.export import artifact_filename, artifact_format, export_artifact, load_artifact
from pgolf.core.finite import (  # noqa: F401 - NonFiniteLossError/NonFiniteScoreError re-exported
    NonFiniteLossError,
    NonFiniteScoreError,
    check_finite_artifact,
    check_finite_score,
)
from pgolf.core.loop import LoopController, prime_looped
from pgolf.core.model import GPT, build_model
from pgolf.core.model.layers import CastedLinear, Rotary
from pgolf.core.ownership import process_identity
from pgolf.core.qat import QATController, assign_qat_specs
from pgolf.core.run_data import check_eval_fits, load_data
from pgolf.core.runs import CHECKPOINT, TRAINING_END, RunWriter, claim_run_dir, environment
from pgolf.core.runtime import (  # noqa: F401 - re-exported: the trainer's process, as tools import it
    Dist,
    grad_accum_steps,
    rng_state,
    set_rng_state,
    setup_dist,
    use_compile,
)
from pgolf.core.stopping import (  # noqa: F401 - StopRequested/CheckpointError re-exported
    CheckpointError,
    StopRequested,
    StopSignals,
    load_record,
    sha256_of,
)

# Bumped when the checkpoint layout changes; v2: RNG states as tensors and plain values (weights-only loading).
CHECKPOINT_FORMAT = "pgolf_checkpoint_v2"
TRAINING_END_FORMAT = "pgolf_training_end_v1"


def prepare_model(cfg: Config, device: torch.device) -> GPT:
    model = _float64_model(cfg, device) if cfg.train.float64 else build_model(cfg).to(device)
    if device.type == "cuda":
        # Official dtype layout: bf16 body, fp32 matrices (cast at matmul), fp32 small/control params.
        model = model.bfloat16()
        for m in model.modules():
            if isinstance(m, CastedLinear):
                m.float()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if (p.ndim < 2 or any(pat in name for pat in cfg.model.control_patterns)) and p.dtype != torch.float32:
                    p.data = p.data.float()
    if cfg.qat.enabled:
        assign_qat_specs(model, cfg.export, cfg.qat, control=cfg.model.control_patterns)
    return model


def _float64_model(cfg: Config, device: torch.device) -> GPT:
    """``train.float64``: the model built and initialized in float64 (the same init rules and seeds, drawn in
    float64: float32 ``randn``/``orthogonal_`` differ between CPU kernels, float64 draws do not), every parameter and
    buffer float64, the rotary frequencies recomputed in float64."""
    if device.type != "cpu":
        raise ConfigError(f"train.float64: the float64 reference runs on CPU only, got device {device.type}")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = build_model(cfg)
    finally:
        torch.set_default_dtype(previous)
    model = model.double()
    for m in model.modules():
        if isinstance(m, Rotary):
            m.to_float64()
    return model


@dataclass
class TrainerHooks:
    """The one way tests and tools observe a run or inject faults into it (nothing patches the trainer's internals).

    ``on_step(step, iterations)`` is called after each optimizer step (``step`` = steps done), e.g. by the
    quickstart's progress bar. ``before_step(step)`` is called before step ``step`` (0-based) is trained, after
    the previous step's checkpoint and any validation; it is for fault injection: it may raise, kill the process,
    or return a float that replaces this step's LR scale (NaN poisons the weights), or None to keep the
    schedule's. ``clock_skew_ms`` is added to this process's elapsed training time where the QAT switch reads it,
    so that a test can make ranks disagree about time; the LR schedule and the wallclock cap keep the real clock.
    ``before_export()`` is called after the weights are saved and before export and final scoring (a fault there
    leaves a run whose training finished: ``--resume`` exports and scores it).
    """

    on_step: Callable[[int, int], None] | None = None
    before_step: Callable[[int], float | None] | None = None
    clock_skew_ms: float = 0.0
    before_export: Callable[[], None] | None = None  # called once training ended, before export (a fault there)


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`Trainer.step` did."""

    step: int  # optimizer steps done, this one included
    train_loss: float  # mean loss of the step's micro-batches on this rank (nats per token)
    lr_scale: float  # the LR multiplier the step used (the schedule's, or a before_step hook's)


class Trainer:
    """One run as public stages; :func:`train` runs them all and marks how the run ended::

        with Trainer(cfg, run_dir) as tr:  # claims the run folder; on an exception marks it failed/interrupted
            tr.setup()                     # every attribute the stages use (see setup)
            for _ in range(cfg.train.iterations):
                tr.step()                  # one optimizer step -> StepResult
            tr.evaluate()                  # the periodic validation (logged); evaluate(final=True): the final split
            summary = tr.finish()          # average, save raw, export, score the round trip, summary.json

    :meth:`run` is that loop as the official script runs it: validation every ``train.val_loss_every`` steps and
    at the end, checkpoints, and the wallclock stop agreed across ranks. :meth:`setup_model` alone builds what
    :meth:`step` needs without data (``pgolf bench`` steps on synthetic tokens that way). QAT is switched only
    by ``self.qat`` (:class:`pgolf.core.qat.QATController`).
    """

    def __init__(self, cfg: Config, run_dir: Path | str | None = None, *, resume: bool = False, console: bool = True,
                 labels: dict[str, Any] | None = None, hooks: TrainerHooks | None = None):
        self.cfg = cfg
        self.labels = dict(labels or {})  # copied into summary.json (e.g. ablation arm names); not config
        self.hooks = hooks or TrainerHooks()
        self.d = setup_dist(cfg)
        self.resume = resume
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.use_autocast = self.d.device.type == "cuda"  # bf16 autocast, as the official script on GPUs
        if self.d.device.type == "cpu":
            torch.set_num_threads(cfg.train.num_threads or 1)
        self.accum = grad_accum_steps(cfg, self.d.world_size)
        self.batch_tokens_trained = batch_tokens_trained(cfg, self.d.world_size, self.accum)
        self.compiled = use_compile(cfg, self.d.device)
        self.model: nn.Module | None = None  # the compiled / DDP wrapper, built by setup_model
        self.is_setup = False
        self.stop_signals = StopSignals()  # SIGTERM handling while run() runs
        self.finish_only: dict[str, Any] | None = None  # resume of a run whose training ended (training_end.json)
        # Last, so that nothing after it can fail and leave the lock held: close() releases it.
        self.lock, stale = (claim_run_dir(self.run_dir, resume=resume) if self.d.master and self.run_dir is not None
                            else (None, []))
        self.out = RunWriter(self.run_dir, enabled=self.d.master, console=console)
        self.log_sizes_at_start = self.out.log_sizes()  # a resume cuts from the checkpoint up to here
        for p in stale:
            self.log(f"cleanup: removed {p.relative_to(self.run_dir)} (temp file of a writer that died)")

    # -- lifetime -------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is not None:
                self.mark_ended(exc)
        finally:
            self.close()
        return False

    def mark_ended(self, exc: BaseException) -> None:
        """Record in status.json and the log that the run stopped on ``exc``: ``interrupted`` for Ctrl-C
        (``--resume`` continues from the last checkpoint), else ``failed`` with the error."""
        if isinstance(exc, KeyboardInterrupt):
            has_ck = self.run_dir is not None and (self.run_dir / CHECKPOINT).exists()
            trained = self.run_dir is not None and (self.run_dir / TRAINING_END).exists()
            why = exc.signal_name if isinstance(exc, StopRequested) else "KeyboardInterrupt"
            self.out.status("interrupted", rank=self.d.rank, error=why, checkpoint=has_ck, training_finished=trained,
                            **({"signal": why} if isinstance(exc, StopRequested) else {}))
            self.log(f"run_interrupted rank:{self.d.rank} by:{why} checkpoint:{int(has_ck)}"
                     + (" training_finished:1" if trained else ""))
        else:
            self.out.status("failed", rank=self.d.rank, error=f"{type(exc).__name__}: {exc}")
            self.log(f"run_failed rank:{self.d.rank} error:{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Release the run folder's lock (after the final status: the next owner sees this run's end state) and
        the process group. Idempotent."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        release_dist(self)

    # -- small public helpers ---------------------------------------------------------------------
    def log(self, msg: str, console: bool = True) -> None:
        self.out.log(msg, console)

    def sync(self) -> None:
        """Wait for the device (timings on CUDA)."""
        if self.d.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self):
        """The forward pass's autocast context: bf16 on CUDA, none on CPU."""
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.use_autocast else nullcontext()

    def rewrap(self) -> None:
        """Rebuild the compiled / DDP wrapper around ``self.base`` after ``torch._dynamo.reset()`` (QAT's recompile)."""
        torch._dynamo.reset()
        self.model = self._wrap()

    def elapsed_ms(self) -> float:
        """Training time so far (validation, checkpoints and set-up excluded)."""
        if self._clock_from is None:
            return self.training_time_ms
        return self.training_time_ms + 1000.0 * (time.perf_counter() - self._clock_from)

    def _clock_start(self) -> None:
        self.sync()
        self._clock_from = time.perf_counter()

    def _clock_stop(self, count: bool = True) -> None:
        self.sync()
        if count:
            self.training_time_ms = self.elapsed_ms()
        self._clock_from = None

    def _wrap(self) -> nn.Module:
        m: nn.Module = self.base
        if self.compiled:
            m = torch.compile(self.base, dynamic=False, fullgraph=True)
        if self.d.distributed:
            ids = [self.d.local_rank] if self.d.device.type == "cuda" else None
            m = DDP(m, device_ids=ids, broadcast_buffers=False)
        return m

    def _make_loader(self):
        from pgolf.core.data.permuted import make_train_loader
        return make_train_loader(self.cfg, self.ds.train_files, self.d.rank, self.d.world_size, self.d.device)

    def _progress(self, step: int, elapsed_ms: float) -> float:
        cap_s = self.cfg.training_cap_seconds
        return elapsed_ms / (1000.0 * cap_s) if cap_s > 0 else step / self.cfg.train.iterations

    def _micro_step(self, loader) -> torch.Tensor:
        total = torch.zeros((), device=self.d.device, dtype=torch.float64 if self.cfg.train.float64 else torch.float32)
        for micro in range(self.accum):
            if self.d.distributed:
                self.model.require_backward_grad_sync = micro == self.accum - 1
            x, y = loader.next_batch(self.cfg.train.train_batch_tokens, self.cfg.train.train_seq_len, self.accum)
            with self.autocast():
                loss = self.model(x, y)
            total += loss.detach()
            (loss * (1.0 / self.accum)).backward()
        return total / self.accum

    def _zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def _official_eval_part_seqs(self) -> int:
        """On CPU the official evaluator runs each validation batch (65,536 tokens a rank at micro scale) through
        the model in parts of a training micro-batch's sequences: the same bits (:func:`batch_mean_loss`), a
        fraction of the memory, and less time. 0 (the whole batch at once) on CUDA and for a compiled model, whose
        generated kernels may round a per-token loss differently from the mean's."""
        if self.d.device.type == "cuda" or self.compiled:
            return 0
        t = self.cfg.train
        return max(1, t.train_batch_tokens // (self.d.world_size * self.accum * t.train_seq_len))

    def _validate(self, tokens: torch.Tensor, final: bool) -> EvalResult:
        c = self.cfg
        if not final or self.official_eval:
            return eval_official(self.model, tokens, self.luts, c.train.train_seq_len, c.train.val_batch_size,
                                 self.d.rank, self.d.world_size, self.accum, self.d.device, self.use_autocast,
                                 part_seqs=self._official_eval_part_seqs())
        # Sliding / other-length / full-tail evaluation: its own forward (compiled with static shapes on CUDA,
        # batches padded to eval.batch_seqs so each window length compiles once; eager on CPU).
        return eval_windows(self.eval_model, tokens, self.luts, c.eval.seq_len or c.train.train_seq_len,
                            c.eval.stride, c.eval.tail, c.eval.batch_seqs, self.d.rank, self.d.world_size,
                            self.d.device, self.use_autocast, c.eval.window_rule, fixed_batch=self.compiled)

    # -- stage 1: set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Seed, write ``config.json``/``dataset.json``/``environment.json`` (not on resume), mark the run running,
        load and check the data, build the model (:meth:`setup_model`), the token loader, switch QAT on at step 0
        when ``qat.start_frac <= 0``, prime compilation (``train.warmup_steps``), and on resume restore the
        checkpoint. Afterwards every attribute the other stages use exists."""
        if self.is_setup:
            raise RuntimeError("Trainer.setup() was already called")
        cfg, d, t = self.cfg, self.d, self.cfg.train
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if d.device.type == "cuda":
            torch.cuda.manual_seed_all(t.seed)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if not self.resume:
            self.out.json("config.json", cfg.to_dict())
        self.out.status("running", rank_count=d.world_size, **process_identity())
        self.ds, self.dataset_id, self.luts, self.val_periodic, self.val_final, self.official_eval = load_data(cfg, d)
        check_eval_fits(cfg, self.val_final, self.official_eval, d.world_size, self.accum)
        if not self.resume:
            self.out.json("dataset.json", self.dataset_id.record())
            self.out.json("environment.json", {**environment(), "dataset_sha256": self.dataset_id.sha256})
        for line in self.dataset_id.log_lines():
            self.log(line)
        self.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={self.ds.tokenizer_path}")
        self.log(f"train_loader:dataset:{Path(self.ds.root).name} train_shards:{len(self.ds.train_files)}")
        self.log(f"val_loader:shards pattern={cfg.data.val_pattern} tokens:{self.val_periodic.numel() - 1}")
        self.setup_model()
        self._log_setup()
        self.loader = self._make_loader()
        if cfg.qat.enabled and cfg.qat.start_frac <= 0 and not self.resume:  # on resume the checkpoint decides
            self.qat.maybe_switch(0, self._progress(0, self.hooks.clock_skew_ms))
        if t.warmup_steps > 0 and not self.resume:
            self.compile_ms = self._prime(self.loader)
            self.loader = self._make_loader()
        if self.resume and self.run_dir is not None and (self.run_dir / TRAINING_END).exists():
            self.finish_only = self._read_training_end()
        elif self.resume:
            self.steps_done, self.training_time_ms = self._restore()
        self.is_setup = True

    def setup_model(self, loader=None) -> None:
        """The model, its compiled / DDP wrapper, the optimizers (Muon), the weight averager, the QAT controller,
        the step counter and the training clock: all that :meth:`step` needs besides the token loader
        (``loader``: anything with ``next_batch(global_tokens, seq_len, grad_accum_steps)``; :meth:`setup` sets
        the dataset's)."""
        cfg, d = self.cfg, self.d
        self.base = prepare_model(cfg, d.device)
        self.model = self._wrap()
        self.eval_model = compile_for_eval(self.base) if self.compiled else self.base  # window evaluation's forward
        self.optimizers, self.muon = optim.build_optimizers(self.base, cfg, fused=d.device.type == "cuda")
        if self.compiled:
            self.muon.orthogonalize = torch.compile(optim.zeropower_via_newtonschulz5)
        self.averager = WeightAverager(self.base, cfg.averaging)
        self.qat = QATController(self.base, cfg.qat, distributed=d.distributed, device=d.device,
                                 recompile=self.rewrap if self.compiled else None, log=self.log,
                                 metric=self.out.metric)
        self.loop = LoopController(self.base, cfg.model, distributed=d.distributed, device=d.device, log=self.log,
                                   metric=self.out.metric)
        self.n_params = sum(p.numel() for p in self.base.parameters())
        self.loader = loader
        self.steps_done = 0  # optimizer steps taken
        self.training_time_ms = 0.0  # training time before the clock's current stretch
        self._clock_from: float | None = None  # perf_counter when the clock last started; None: stopped
        self.stop_after: int | None = None  # the step the wallclock cap stops the run at, once reached
        self.last_val: EvalResult | None = None  # the latest periodic validation
        self.compile_ms = 0.0  # compile priming time

    def _log_setup(self) -> None:
        cfg, d, t, o = self.cfg, self.d, self.cfg.train, self.cfg.optim
        self.log(f"model_params:{self.n_params}")
        self.log(f"world_size:{d.world_size} grad_accum_steps:{self.accum}")
        self.log(f"device:{d.device.type} compile:{int(self.compiled)} threads:{torch.get_num_threads()}")
        self.log(f"attention_mode:gqa num_heads:{cfg.model.num_heads} num_kv_heads:{cfg.model.num_kv_heads}")
        token_lr = o.tied_embed_lr if cfg.model.tie_embeddings else o.embed_lr
        self.log(f"tie_embeddings:{cfg.model.tie_embeddings} embed_lr:{token_lr} "
                 f"head_lr:{o.head_lr if self.base.lm_head is not None else 0.0} "
                 f"matrix_lr:{o.matrix_lr} scalar_lr:{o.scalar_lr}")
        self.log(f"train_batch_tokens:{t.train_batch_tokens} train_seq_len:{t.train_seq_len} "
                 f"iterations:{t.iterations} warmup_steps:{t.warmup_steps} "
                 f"max_wallclock_seconds:{t.max_wallclock_seconds:.3f}")
        if cfg.training_cap_seconds != t.max_wallclock_seconds:
            self.log(f"gptq:reserving {cfg.export.gptq_reserve_seconds:.0f}s, "
                     f"effective={1000 * cfg.training_cap_seconds:.0f}ms")
        self.log(f"seed:{t.seed}")

    def _prime(self, loader) -> float:
        """Official compile priming: run warmup steps, then restore the initial weights and optimizers."""
        t = self.cfg.train
        t_start = time.perf_counter()
        init_model = {k: v.detach().cpu().clone() for k, v in self.base.state_dict().items()}
        init_opts = [copy.deepcopy(opt.state_dict()) for opt in self.optimizers]
        self.model.train()

        def warmup(tag: str = "warmup_step") -> None:
            for i in range(t.warmup_steps):
                self._zero_grad()
                self._micro_step(loader)
                for opt in self.optimizers:
                    opt.step()
                self._zero_grad()
                if t.warmup_steps <= 20 or (i + 1) % 10 == 0 or i + 1 == t.warmup_steps:
                    self.log(f"{tag}:{i + 1}/{t.warmup_steps}")
        warmup()
        prime_looped(self.base, self.cfg.model, lambda: warmup("loop_warmup_step"), self.log)  # depth recurrence
        self.base.load_state_dict(init_model, strict=True)
        for opt, state in zip(self.optimizers, init_opts, strict=True):
            opt.load_state_dict(state)
        self._zero_grad()
        if self.d.distributed:
            self.model.require_backward_grad_sync = True
        self.sync()
        return 1000.0 * (time.perf_counter() - t_start)

    # -- stage 2: one training step -----------------------------------------------------------------
    def step(self) -> StepResult:
        """One optimizer step: the QAT switch when due, the LR and momentum schedule, zero grad, the micro-steps,
        gradient clipping, the optimizers' step, the weight averager; logged and written to metrics.jsonl.
        Raises :class:`NonFiniteLossError` when the train loss is NaN or inf."""
        cfg, t = self.cfg, self.cfg.train
        step = self.steps_done
        elapsed_ms = self.elapsed_ms()
        self.qat.maybe_switch(step, self._progress(step, elapsed_ms + self.hooks.clock_skew_ms))
        self.loop.maybe_switch(step, self._progress(step, elapsed_ms + self.hooks.clock_skew_ms))
        forced = self.hooks.before_step(step) if self.hooks.before_step is not None else None
        scale = optim.lr_multiplier(step, elapsed_ms, cfg) if forced is None else forced
        self._zero_grad()
        train_loss = self._micro_step(self.loader)
        for g in self.muon.param_groups:
            g["momentum"] = optim.muon_momentum(step, cfg)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
        if cfg.optim.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.base.parameters(), cfg.optim.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()
        self._zero_grad()
        self.steps_done = step = step + 1
        loss_value = train_loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"rank {self.d.rank}: train_loss is {loss_value} at step {step}")
        if self.averager.update(self.base, step, scale) and cfg.averaging.mode == "swa":
            self.out.metric(event="swa_snapshot", step=step, count=self.averager.count)
        approx_ms = self.elapsed_ms()
        if t.train_log_every > 0 and (step <= 10 or step % t.train_log_every == 0 or self.stop_after is not None):
            self.log(f"step:{step}/{t.iterations} train_loss:{loss_value:.4f} "
                     f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        self.out.metric(step=step, train_loss=loss_value, lr_scale=scale, train_time_ms=approx_ms)
        if self.hooks.on_step is not None:
            self.hooks.on_step(step, t.iterations)
        return StepResult(step, loss_value, scale)

    # -- stage 3: evaluation ------------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> EvalResult:
        """``final=False``: the periodic validation on the official split, the training clock paused, logged as
        ``step:N/M val_loss:...`` and kept as ``last_val``. ``final=True``: the current weights on the final split
        with the ``eval.*`` settings, as :meth:`finish` scores them (not logged)."""
        if final:
            return self._validate(self.val_final, final=True)
        running = self._clock_from is not None
        self._clock_stop()
        val = self._validate(self.val_periodic, final=False)
        step, ms = self.steps_done, self.training_time_ms
        self.log(f"step:{step}/{self.cfg.train.iterations} val_loss:{val.val_loss:.4f} val_bpb:{val.val_bpb:.4f} "
                 f"train_time:{ms:.0f}ms step_avg:{ms / max(step, 1):.2f}ms")
        self.out.metric(step=step, val_loss=val.val_loss, val_bpb=val.val_bpb, train_time_ms=ms)
        self.last_val = val
        if running:
            self._clock_start()
        return val

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """:meth:`setup`, the training loop (validation cadence, checkpoints, the wallclock stop agreed across
        ranks), :meth:`finish`; returns the summary."""
        with self.stop_signals as stop:
            self.setup()
            if self.finish_only is not None:
                return self.finish_from_raw()
            t = self.cfg.train
            self._clock_start()
            stop.deferred = True  # SIGTERM from here on: stop at a step boundary, agreed across ranks
            while True:
                last = self.steps_done == t.iterations or (self.stop_after is not None
                                                            and self.steps_done >= self.stop_after)
                if last or (t.val_loss_every > 0 and self.steps_done % t.val_loss_every == 0):
                    self.evaluate()
                if last:
                    if self.stop_after is not None and self.steps_done < t.iterations:
                        self.log(f"stopping_early: wallclock_cap train_time:{self.training_time_ms:.0f}ms "
                                 f"step:{self.steps_done}/{t.iterations}")
                    break
                r = self.step()
                checkpointed = bool(t.checkpoint_every and r.step % t.checkpoint_every == 0)
                if checkpointed:
                    self.checkpoint()
                stop_now, cap_reached = self.agreed_stops(stop.received is not None)  # every rank, every step
                if stop_now:
                    self.log(f"stop_requested: {signal.Signals(stop.received or signal.SIGTERM).name} "
                             f"step:{r.step}/{t.iterations}; writing a checkpoint")
                    if not checkpointed:
                        self.checkpoint()
                    raise StopRequested(stop.received or signal.SIGTERM)
                if cap_reached and self.stop_after is None:
                    self.stop_after = r.step
            stop.deferred = False
            if stop.received is not None:  # came during the last step: finish() stops once the weights are saved
                self.log(f"stop_requested: {signal.Signals(stop.received).name} after the last step")
            self._clock_stop(count=False)  # training ended with the last validation
            return self.finish()

    def agreed_stops(self, requested_here: bool) -> tuple[bool, bool]:
        """(whether any rank was asked to stop (SIGTERM), whether any rank's training time reached the cap): one
        MAX all-reduce of both flags, so that all ranks stop after the same step (and write the same checkpoint
        together); :meth:`wallclock_reached` is the second flag alone."""
        cap_s = self.cfg.training_cap_seconds
        reached = cap_s > 0 and self.elapsed_ms() >= 1000.0 * cap_s
        if not self.d.distributed:
            return requested_here, reached
        flags = torch.tensor([int(requested_here), int(reached)], device=self.d.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        requested, reached = flags.tolist()
        return bool(requested), bool(reached)

    def wallclock_reached(self) -> bool:
        """Whether the training time reached the cap (:attr:`Config.training_cap_seconds`) on any rank (a MAX
        all-reduce, so all ranks stop after the same step); False without a cap."""
        cap_s = self.cfg.training_cap_seconds
        if cap_s <= 0:
            return False
        reached = self.elapsed_ms() >= 1000.0 * cap_s
        if self.d.distributed:
            flag = torch.tensor(int(reached), device=self.d.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            reached = bool(flag.item())
        return reached

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (rank 0; every rank takes part, Muon's state is gathered), the clock paused."""
        running = self._clock_from is not None
        self._clock_stop()
        opt_states = [opt.state_dict() for opt in self.optimizers]
        loader_state = self.loader.state_dict()
        if self.d.distributed and loader_state.get("per_rank"):  # each rank draws its own batches: keep them all
            by_rank: list[Any] = [None] * self.d.world_size
            dist.all_gather_object(by_rank, loader_state)
            loader_state = {"order": loader_state["order"], "by_rank": by_rank}
        if self.d.distributed:  # Muon momentum lives only on the rank that owns each matrix
            gathered: list[Any] = [None] * self.d.world_size
            dist.all_gather_object(gathered, opt_states)
        else:
            gathered = [opt_states]
        if self.d.master:
            self.out.metric(event="checkpoint", step=self.steps_done)  # before log_sizes: a resume keeps this row
            self.out.torch_save(CHECKPOINT, {
                "step": self.steps_done, "training_time_ms": self.training_time_ms, "model": self.base.state_dict(),
                "optimizers_by_rank": gathered, "loader": loader_state, "averager": self.averager.state_dict(),
                **self.qat.state_dict(), **self.loop.state_dict(), "config": self.cfg.to_dict(),
                "dataset_sha256": self.dataset_id.sha256, "dataset_path": self.dataset_id.path,
                "rng": rng_state(), "format": CHECKPOINT_FORMAT, "log_sizes": self.out.log_sizes(),
            })
        if running:
            self._clock_start()

    def _restore(self) -> tuple[int, float]:
        assert self.run_dir is not None
        path = self.run_dir / CHECKPOINT
        ck = load_record(path, "pgolf checkpoint", self.d.device)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
            raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (found format {found!r}); it was written "
                             f"by another pgolf version or is not a pgolf checkpoint")
        if ck["config"] != self.cfg.to_dict():
            raise ValueError(f"{self.run_dir / CHECKPOINT}: saved config differs from this run's; resume with the "
                             f"same config (see {self.run_dir / 'config.json'})")
        note = check_same_dataset(self.run_dir / CHECKPOINT, ck.get("dataset_sha256"), ck.get("dataset_path"),
                                  self.dataset_id)
        if note:
            self.log(note)
        self.base.load_state_dict(ck["model"], strict=True)
        for opt, state in zip(self.optimizers, ck["optimizers_by_rank"][self.d.rank], strict=True):
            opt.load_state_dict(state)
        self.loader.load_state_dict(ck["loader"])
        self.averager.load_state_dict(ck["averager"])
        self.qat.load_state_dict({"qat_step": ck["qat_step"], "qat_active": ck["qat_active"]})
        self.loop.load_state_dict(ck)
        set_rng_state(ck["rng"])
        cut = self.out.cut_logs(ck.get("log_sizes"), self.log_sizes_at_start)
        self.log(f"resume:step:{ck['step']} train_time:{ck['training_time_ms']:.0f}ms")
        for note in cut:
            self.log(f"resume:{note}")
        return ck["step"], ck["training_time_ms"]

    # -- stage 4: finish --------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Apply the weight average, switch QAT off, save the raw weights (``final_model.pt``), export the artifact,
        score it after the round trip, write ``summary.json`` and mark the run finished; returns the summary."""
        cfg = self.cfg
        if self.d.device.type == "cuda":
            self.log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB "
                     f"reserved: {torch.cuda.max_memory_reserved() // 1024 // 1024} MiB")
        avg = self.averager.averaged_state(self.base)
        if avg is None and self.averager.count and cfg.averaging.mode == "swa":
            self.log(f"swa:not_applied snapshots:{self.averager.count} (< averaging.swa_min_snapshots)")
        if avg is not None:
            self.base.load_state_dict(avg, strict=True)
            self.log(f"{cfg.averaging.mode}:applied snapshots:{self.averager.count}")
            self.out.metric(event=f"{cfg.averaging.mode}_applied", step=self.steps_done, count=self.averager.count)
        elif self.averager.count:
            self.log(f"{cfg.averaging.mode}:not_applied snapshots:{self.averager.count} "
                     f"(fewer than averaging.swa_min_snapshots={cfg.averaging.swa_min_snapshots})")
        self.qat.switch_off()  # evaluation and export see the real weights
        self.loop.for_evaluation()
        # A copy: on CPU .cpu() would alias the parameters, which the artifact round trip overwrites.
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.base.state_dict().items()}
        averaged = avg is not None
        if cfg.train.save_raw_model:  # first, so that a failing export or evaluation loses nothing
            self._save_raw(state, averaged)
        try:
            if self.stop_signals.received is not None:  # SIGTERM during the last step: stop with the weights saved
                raise StopRequested(self.stop_signals.received)
            summary = self._score_and_export(state, averaged=averaged)
        except BaseException:
            if not cfg.train.save_raw_model:
                self._save_raw(state, averaged,
                               note=" (train.save_raw_model=false, kept because export or scoring failed)")
            raise
        if self.d.master and self.run_dir is not None:
            (self.run_dir / TRAINING_END).unlink(missing_ok=True)  # the run is finished: nothing left to resume
        return summary

    def _save_raw(self, state: dict[str, torch.Tensor], averaged: bool, note: str = "") -> None:
        """``final_model.pt``, and beside it ``training_end.json``: what :meth:`finish_from_raw` needs to export
        and score these weights on ``--resume`` without training again (removed when the run finishes)."""
        if self.d.master and self.run_dir is not None:
            self.out.torch_save("final_model.pt", state)
            self.log(f"Serialized model: {(self.run_dir / 'final_model.pt').stat().st_size} bytes{note}")
            self.out.json(TRAINING_END, {
                "format": TRAINING_END_FORMAT, "steps": self.steps_done, "training_time_ms": self.training_time_ms,
                "compile_priming_ms": self.compile_ms, "averaged": averaged,
                "averaged_snapshots": self.averager.count, "qat_step": self.qat.qat_step,
                "loop_step": self.loop.loop_step, "loop_active": self.loop.active,
                "last_val": dataclasses.asdict(self.last_val) if self.last_val is not None else None,
                "final_model_sha256": sha256_of(self.run_dir / "final_model.pt"), "config": self.cfg.to_dict(),
                "dataset_sha256": self.dataset_id.sha256, "log_sizes": self.out.log_sizes()})

    def _read_training_end(self) -> dict[str, Any]:
        assert self.run_dir is not None
        path = self.run_dir / TRAINING_END
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot be read ({exc}); start the run again with --overwrite") from None
        if not isinstance(info, dict) or info.get("format") != TRAINING_END_FORMAT:
            raise CheckpointError(f"{path}: not a {TRAINING_END_FORMAT} record")
        try:
            same = Config.from_dict(info.get("config") or {}).to_dict() == self.cfg.to_dict()  # JSON: lists for tuples
        except ValueError:
            same = False
        if not same:
            raise ValueError(f"{path}: saved config differs from this run's; resume with the same config "
                             f"(see {self.run_dir / 'config.json'})")
        if info.get("dataset_sha256") != self.dataset_id.sha256:
            raise ValueError(f"{path}: the weights were trained on dataset {info.get('dataset_sha256')}, this run "
                             f"reads {self.dataset_id.sha256}; resume with the same data")
        raw = self.run_dir / "final_model.pt"
        if not raw.is_file() or sha256_of(raw) != info.get("final_model_sha256"):
            raise CheckpointError(f"{raw}: missing or not the file {path} recorded (sha256 "
                                  f"{info.get('final_model_sha256')}); start the run again with --overwrite")
        return info

    def finish_from_raw(self) -> dict[str, Any]:
        """``--resume`` of a run whose training ended but whose export or scoring did not: the saved
        ``final_model.pt`` is exported and scored as :meth:`finish` would have, without a training step (the
        log rows the interrupted export wrote are cut, as a resume cuts rows after its checkpoint)."""
        assert self.finish_only is not None and self.run_dir is not None
        info = self.finish_only
        raw = self.run_dir / "final_model.pt"
        state = load_record(raw, "pgolf final_model.pt", "cpu")
        for note in self.out.cut_logs(info.get("log_sizes"), self.log_sizes_at_start):
            self.log(f"resume:{note}")
        self.log(f"resume:training_finished step:{info['steps']} train_time:{info['training_time_ms']:.0f}ms; "
                 f"exporting and scoring {raw.name}")
        self.steps_done, self.training_time_ms = info["steps"], info["training_time_ms"]
        self.compile_ms = info["compile_priming_ms"]
        self.averager.count = info["averaged_snapshots"]
        self.qat.qat_step = info["qat_step"]
        self.loop.load_state_dict({"loop_step": info["loop_step"], "loop_active": info["loop_active"]})
        self.last_val = EvalResult(**info["last_val"]) if info["last_val"] is not None else None
        self.base.load_state_dict(state, strict=True)
        self.qat.switch_off()
        self.loop.for_evaluation()
        summary = self._score_and_export(state, averaged=info["averaged"])
        if self.d.master:
            (self.run_dir / TRAINING_END).unlink(missing_ok=True)
        return summary

    def _score_and_export(self, state: dict[str, torch.Tensor], averaged: bool) -> dict[str, Any]:
        cfg, d = self.cfg, self.d
        if self.hooks.before_export is not None:
            self.hooks.before_export()
        step, training_time_ms = self.steps_done, self.training_time_ms
        # Official scoring reuses the last periodic validation when the weights are still those it saw.
        pre = self.last_val if not averaged and self.official_eval and self.last_val is not None else None
        if pre is None:
            pre = self.evaluate(final=True)
        self.log(f"final_prequant val_loss:{pre.val_loss:.4f} val_bpb:{pre.val_bpb:.4f} tokens:{pre.tokens}")
        check_finite_score("final_prequant", pre, state)
        code = accounting.code_bytes(cfg)
        hessians, t0 = None, time.perf_counter()
        if cfg.export.quantizer == "gptq":  # the final weights' Hessians, from fresh training micro-batches
            t = cfg.train
            with self.autocast():
                hessians = gptq.collect_hessians(self.base, gptq.calibration_batches(
                    self._make_loader(), cfg.export.gptq_calibration_batches, t.train_batch_tokens, t.train_seq_len,
                    self.accum), reduce=d.distributed)
        blob, report = export_artifact(state, cfg.export, control=cfg.model.control_patterns, hessians=hessians)
        export_ms = 1000 * (time.perf_counter() - t0)  # GPTQ: calibration included, what the reserve must cover
        if hessians is not None:
            self.log(f"gptq:calibrated {len(hessians)} tensors, calibration+quantization {export_ms:.0f}ms "
                     f"(reserve {1000 * cfg.export.gptq_reserve_seconds:.0f}ms)")
        restored = load_artifact(blob, check_finite=False)  # check_finite_artifact names the trained max |w|
        check_finite_artifact(state, restored)
        tag = artifact_format(report)
        if d.master:
            self.log(f"Code size: {code} bytes ({accounting.CODE_BYTES_NOTE})")
            self.out.bytes(artifact_filename(report), blob)
            self.log(f"Serialized model {tag}: {len(blob)} bytes (payload:{report['payload_bytes']} "
                     f"raw_torch:{report['serialized_bytes']} payload_ratio:"
                     f"{report['raw_bytes'] / max(report['payload_bytes'], 1):.2f}x)")
            self.log(f"Total submission size {tag}: {len(blob) + code} bytes")
            self.out.json("export_report.json", report)
        over_cap = accounting.over_cap_line(len(blob), code)  # None when it fits
        if over_cap:
            self.log(over_cap)
        if d.distributed:
            dist.barrier()
        self.base.load_state_dict(restored, strict=True)
        t_q = time.perf_counter()
        q = self.evaluate(final=True)
        self.log(f"final_{tag}_roundtrip val_loss:{q.val_loss:.4f} val_bpb:{q.val_bpb:.4f} "
                 f"eval_time:{1000.0 * (time.perf_counter() - t_q):.0f}ms")
        self.log(f"final_{tag}_roundtrip_exact val_loss:{q.val_loss:.8f} val_bpb:{q.val_bpb:.8f}")
        check_finite_score(f"final_{tag}_roundtrip", q, restored)
        summary = {
            "status": "finished", "name": self.run_dir.name if self.run_dir else None, **self.labels, "steps": step,
            "train_time_ms": training_time_ms,
            "step_avg_ms": training_time_ms / max(step, 1), "tokens_seen": step * self.batch_tokens_trained,
            "compile_priming_ms": self.compile_ms, "model_params": self.n_params, "seed": cfg.train.seed,
            "init_seed": cfg.train.seed, "init_seeding": cfg.model.init_seeding, "data_order": cfg.data.order,
            "data_order_seed": cfg.data.order_seed,
            "val_loss": pre.val_loss, "val_bpb": pre.val_bpb, "q_val_loss": q.val_loss, "q_val_bpb": q.val_bpb,
            "quant_gap_bpb": q.val_bpb - pre.val_bpb, "val_tokens_scored": q.tokens, "val_bytes_scored": q.bytes,
            "eval_mode": "official" if self.official_eval else
            window_mode(cfg.eval.seq_len or cfg.train.train_seq_len, cfg.eval.stride, cfg.eval.tail, cfg.eval.window_rule),
            "artifact_bytes": len(blob), "artifact_sha256": report["artifact_sha256"], "artifact_format": tag, "artifact_file": artifact_filename(report),
            "code_bytes": code, "code_bytes_counts": accounting.CODE_BYTES_NOTE,
            "total_bytes": len(blob) + code, "fits_16mb": accounting.fits(len(blob), code),
            "qat_step": self.qat.qat_step, "loop_step": self.loop.loop_step,
            "averaged_snapshots": self.averager.count, "export_ms": export_ms,
            "training_cap_seconds": cfg.training_cap_seconds,
            "device": d.device.type, "world_size": d.world_size,
            "dataset_sha256": self.dataset_id.sha256, "dataset_path": self.dataset_id.path,
            "unigram_val_bpb": self.dataset_id.unigram_val_bpb,
        }
        if over_cap and cfg.export.require_fit:
            summary.update(status="failed", error=f"export.require_fit: {over_cap}")
        self.out.json("summary.json", summary)
        if over_cap and cfg.export.require_fit:
            raise accounting.OverCapError(summary["error"])
        self.out.status("finished")
        return summary


def train(cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False, console: bool = True,
          labels: dict[str, Any] | None = None, hooks: TrainerHooks | None = None) -> dict[str, Any]:
    """Train, export and score one run (:meth:`Trainer.run`); returns the summary. Marks the run failed on any
    error, and ``interrupted`` on Ctrl-C (KeyboardInterrupt), which ``--resume`` continues from the last checkpoint.

    ``labels`` (e.g. ablation arm names) are copied into ``summary.json``; they are not config. ``hooks``
    (:class:`TrainerHooks`) observe the steps (a progress bar) or inject faults (tests)."""
    with Trainer(cfg, run_dir, resume=resume, console=console, labels=labels, hooks=hooks) as trainer:
        return trainer.run()


def release_dist(trainer: Trainer) -> None:
    """Destroy the process group here, while the interpreter is alive, without holding the GIL while it dies.

    Gloo's worker threads free each finished collective themselves, and freeing a tensor whose Python
    object is already gone takes the GIL. ``~ProcessGroupGloo`` joins those threads, so whoever drops
    the last reference to the group must not hold the GIL then, and must do it before interpreter exit
    (where a thread asking for the GIL is killed inside a C++ destructor: "terminate called without an
    active exception", SIGABRT). The Python wrapper of the group releases the GIL in its destructor;
    DDP's C++ reducer, which also holds the group, does not (a rank then deadlocks). So the DDP wrapper
    goes first, and destroy_process_group drops the last reference through the Python wrapper. Nothing
    else may keep the group: see the torch._dynamo import in :func:`setup_dist`."""
    if not (trainer.d.distributed and dist.is_initialized()):
        return
    trainer.model = None
    gc.collect()  # the reducer goes with the DDP object; collect in case a reference cycle holds it
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


def batch_tokens_trained(cfg: Config, world_size: int, accum: int) -> int:
    """Tokens one optimizer step trains on: each rank's micro-batch is ``train_batch_tokens // (world_size *
    accum)`` tokens (the loaders' rule), so a batch that does not divide is rounded down."""
    return cfg.train.train_batch_tokens // (world_size * accum) * world_size * accum

