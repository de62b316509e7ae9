"""The training loop itself, for CPU and CUDA, single process or under torchrun, with no run folder.

:class:`TrainLoop` is one run as public, documented stages: it trains, validates, averages, exports and
scores the round-tripped artifact, and returns the summary. The loop follows the official ``train_gpt.py``
step for step (same token order, schedule, logging lines) and adds the seed-PR options. What it emits goes
to a :class:`Sink` (log lines, metrics rows, the artifact, the summary) and nowhere else:

- :class:`pgolf.core.train.Trainer` subclasses it for pgolf's runs: the run folder (lock, ``status.json``,
  ``metrics.jsonl``, identity and environment records), checkpoints and ``--resume``, SIGTERM, the raw
  weights and ``training_end.json``. ``pgolf train``, ``quickstart`` and ``study`` go through it.
- The generated submission script (:mod:`pgolf.submit.entry`) runs this loop alone, with a sink that prints
  the official ``key:value`` lines, appends them to ``logs/<RUN_ID>.txt`` and writes the artifact in the
  current directory, as the official script does; so the script holds none of the run-folder code.

The stages, which :meth:`TrainLoop.run` runs in order (``pgolf bench`` and the tests call them one by one):

- ``setup()``: seeds, data (checked before the model is built), model, compiled/DDP wrapper, optimizers,
  weight averager, QAT controller, loader, compile priming. Every attribute the other stages use is created
  here (``setup_model()`` alone: what a step needs, without data).
- ``step()``: one optimizer step -> :class:`StepResult`.
- ``evaluate(final)``: the periodic validation, or the final split as scored.
- ``wallclock_reached()``: what ``run()`` checks between steps.
- ``finish()``: average, export, score the round trip, summary.

QAT is switched on and off only by the run's :class:`pgolf.core.qat.QATController`. Tests and tools observe
or inject faults through :class:`TrainerHooks`, never through environment variables or monkeypatches. A
non-finite final score fails the run (:class:`NonFiniteScoreError`) instead of finishing with NaN.
"""

from __future__ import annotations

import copy
import gc
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Self

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf.core import accounting, gptq, optim, ttt
from pgolf.core.averaging import WeightAverager
from pgolf.core.config import Config, ConfigError
from pgolf.core.evaluate import EvalResult, compile_for_eval, eval_official, eval_windows, window_mode
from pgolf.core.export import artifact_filename, artifact_format, export_artifact, load_artifact
from pgolf.core.finite import NonFiniteLossError, check_finite_artifact, check_finite_score
from pgolf.core.loop import LoopController, prime_looped
from pgolf.core.model import GPT, build_model
from pgolf.core.model.layers import CastedLinear, Rotary
from pgolf.core.qat import QATController, assign_qat_specs
from pgolf.core.run_data import check_eval_fits, load_eval_data, open_dataset
from pgolf.core.runtime import grad_accum_steps, setup_dist, use_compile



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
    """What one :meth:`TrainLoop.step` did."""

    step: int  # optimizer steps done, this one included
    train_loss: float  # mean loss of the step's micro-batches on this rank (nats per token)
    lr_scale: float  # the LR multiplier the step used (the schedule's, or a before_step hook's)


class Sink(Protocol):
    """Where a :class:`TrainLoop` sends what it emits (rank 0 only; the loop never calls it on other ranks)."""

    def log(self, msg: str, console: bool = True) -> None:
        """One log line (``console=False``: the file only, not the terminal)."""

    def metric(self, **row: Any) -> None:
        """One metrics row (a step's train loss, a validation, an event such as ``qat_enabled``)."""

    def artifact(self, filename: str, blob: bytes, report: dict[str, Any]) -> None:
        """The exported artifact as scored, under its name (``final_model.int8.ptz`` at baseline settings), and the
        export report."""

    def summary(self, summary: dict[str, Any]) -> None:
        """The run's summary (``status`` ``finished``, or ``failed`` when it does not fit and ``export.require_fit``)."""


class ConsoleSink:
    """Prints the log lines and keeps nothing: the sink of a loop that has no run folder (``pgolf bench``)."""

    def __init__(self, console: bool = True):
        self.console = console

    def log(self, msg: str, console: bool = True) -> None:
        if self.console and console:
            print(msg, flush=True)

    def metric(self, **row: Any) -> None:
        pass

    def artifact(self, filename: str, blob: bytes, report: dict[str, Any]) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass


class TrainLoop:
    """One run as public stages; :meth:`run` runs them all::

        with TrainLoop(cfg, sink) as tr:  # the process group, released on exit
            tr.setup()                     # every attribute the stages use (see setup)
            for _ in range(cfg.train.iterations):
                tr.step()                  # one optimizer step -> StepResult
            tr.evaluate()                  # the periodic validation (logged); evaluate(final=True): the final split
            summary = tr.finish()          # average, export, score the round trip, the summary

    :meth:`run` is that loop as the official script runs it: validation every ``train.val_loss_every`` steps and
    at the end, and the wallclock stop agreed across ranks. :meth:`setup_model` alone builds what :meth:`step`
    needs without data (``pgolf bench`` steps on synthetic tokens that way). QAT is switched only by ``self.qat``
    (:class:`pgolf.core.qat.QATController`). A subclass adds records through the hooks ``_on_setup``,
    ``_on_dataset``, ``_on_data``, ``_start``, ``_after_step`` and ``_summary_records``
    (:class:`pgolf.core.train.Trainer`: the run folder).
    """

    def __init__(self, cfg: Config, sink: Sink | None = None, *, console: bool = True,
                 hooks: TrainerHooks | None = None):
        self.cfg = cfg
        self.hooks = hooks or TrainerHooks()
        self.d = setup_dist(cfg)
        self.use_autocast = self.d.device.type == "cuda"  # bf16 autocast, as the official script on GPUs
        if self.d.device.type == "cpu":
            torch.set_num_threads(cfg.train.num_threads or 1)
        self.accum = grad_accum_steps(cfg, self.d.world_size)
        self.batch_tokens_trained = batch_tokens_trained(cfg, self.d.world_size, self.accum)
        self.compiled = use_compile(cfg, self.d.device)
        self.model: nn.Module | None = None  # the compiled / DDP wrapper, built by setup_model
        self.is_setup = False
        self.sink = sink if sink is not None else ConsoleSink(console)  # a Sink
        self.name: str | None = None  # the run's name in the summary
        self.labels: dict[str, Any] = {}  # copied into the summary (e.g. ablation arm names); not config

    # -- lifetime -------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def close(self) -> None:
        """Release the process group. Idempotent."""
        release_dist(self)

    # -- small public helpers ---------------------------------------------------------------------
    def log(self, msg: str, console: bool = True) -> None:
        if self.d.master:
            self.sink.log(msg, console)

    def metric(self, **row: Any) -> None:
        if self.d.master:
            self.sink.metric(**row)

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
            x, y, *docs = loader.next_batch(self.cfg.train.train_batch_tokens, self.cfg.train.train_seq_len, self.accum)
            with self.autocast():  # docs: (cu_seqlens, _) of data.order="doc_packing"; max_seqlen fixed as the record's
                loss = (self.model(x, y, cu_seqlens=docs[0], max_seqlen=self.cfg.train.train_seq_len)
                        if self.cfg.model.doc_mask else self.model(x, y))
            total += loss.detach()
            (loss * (1.0 / self.accum)).backward()
        return total / self.accum

    def _zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def official_eval_part_seqs(self) -> int:
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
                                 part_seqs=self.official_eval_part_seqs(),
                                 doc_mask_bos=c.model.bos_id if c.model.doc_mask else None)
        # Sliding / other-length / full-tail evaluation: its own forward (compiled with static shapes on CUDA,
        # batches padded to eval.batch_seqs so each window length compiles once; eager on CPU).
        return eval_windows(self.eval_model, tokens, self.luts, c.eval.seq_len or c.train.train_seq_len,
                            c.eval.stride, c.eval.tail, c.eval.batch_seqs, self.d.rank, self.d.world_size,
                            self.d.device, self.use_autocast, c.eval.window_rule, fixed_batch=self.compiled,
                            doc_mask_bos=c.model.bos_id if c.model.doc_mask else None)

    # -- stage 1: set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Seed, load and check the data, build the model (:meth:`setup_model`), the token loader, then start
        (:meth:`_start`: QAT on at step 0 when ``qat.start_frac <= 0``, compile priming for
        ``train.warmup_steps``). Afterwards every attribute the other stages use exists."""
        if self.is_setup:
            raise RuntimeError("setup() was already called")
        cfg, d, t = self.cfg, self.d, self.cfg.train
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if d.device.type == "cuda":
            torch.cuda.manual_seed_all(t.seed)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._on_setup()
        self.ds, sp = open_dataset(cfg)
        self._on_dataset()
        self.luts, self.val_periodic, self.val_final, self.official_eval = load_eval_data(cfg, d, self.ds, sp)
        check_eval_fits(cfg, self.val_final, self.official_eval, d.world_size, self.accum)
        self._on_data()
        self.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={self.ds.tokenizer_path}")
        self.log(f"train_loader:dataset:{Path(self.ds.root).name} train_shards:{len(self.ds.train_files)}")
        self.log(f"val_loader:shards pattern={cfg.data.val_pattern} tokens:{self.val_periodic.numel() - 1}")
        self.setup_model()
        self._log_setup()
        self.loader = self._make_loader()
        self._start()
        self.is_setup = True

    def _on_setup(self) -> None:
        """Called once seeded, before the data is read (the run folder records the config here)."""

    def _on_dataset(self) -> None:
        """Called once ``self.ds`` is resolved, before anything is read from it (the run folder checks it against
        its manifest here)."""

    def _on_data(self) -> None:
        """Called once the data is loaded and checked (the run folder records the dataset here)."""

    def _start(self) -> None:
        """A fresh start: QAT on at step 0 when ``qat.start_frac <= 0``, then compile priming (a resume restores
        a checkpoint instead)."""
        cfg, t = self.cfg, self.cfg.train
        if cfg.qat.enabled and cfg.qat.start_frac <= 0:
            self.qat.maybe_switch(0, self._progress(0, self.hooks.clock_skew_ms))
        if t.warmup_steps > 0:
            self.compile_ms = self._prime(self.loader)
            self.loader = self._make_loader()

    def setup_model(self, loader=None) -> None:
        """The model, its compiled / DDP wrapper, the optimizers (Muon), the weight averager, the QAT controller,
        the step counter and the training clock: all that :meth:`step` needs besides the token loader
        (``loader``: anything with ``next_batch(global_tokens, seq_len, grad_accum_steps)``; :meth:`setup` sets
        the dataset's)."""
        cfg, d = self.cfg, self.d
        self.base = prepare_model(cfg, d.device)
        self.model = self._wrap()
        self.eval_model = compile_for_eval(self.base) if self.compiled else self.base  # window evaluation's forward
        self.optimizers, self.muon = optim.build_optimizers(self.base, cfg, fused=d.device.type == "cuda",
                                                            eager=not self.compiled)
        if self.compiled:
            self.muon.orthogonalize = torch.compile(optim.zeropower_via_newtonschulz5)
        self.averager = WeightAverager(self.base, cfg.averaging)
        self.qat = QATController(self.base, cfg.qat, distributed=d.distributed, device=d.device,
                                 recompile=self.rewrap if self.compiled else None, log=self.log,
                                 metric=self.metric)
        self.loop = LoopController(self.base, cfg.model, distributed=d.distributed, device=d.device, log=self.log,
                                   metric=self.metric)
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
        gradient clipping, the optimizers' step, the weight averager; logged and sent to the sink as a metrics row.
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
            self.metric(event="swa_snapshot", step=step, count=self.averager.count)
        approx_ms = self.elapsed_ms()
        if t.train_log_every > 0 and (step <= 10 or step % t.train_log_every == 0 or self.stop_after is not None):
            self.log(f"step:{step}/{t.iterations} train_loss:{loss_value:.4f} "
                     f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        self.metric(step=step, train_loss=loss_value, lr_scale=scale, train_time_ms=approx_ms)
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
        self.metric(step=step, val_loss=val.val_loss, val_bpb=val.val_bpb, train_time_ms=ms)
        self.last_val = val
        if running:
            self._clock_start()
        return val

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """:meth:`setup`, the training loop (:meth:`train_steps`), :meth:`finish`; returns the summary."""
        self.setup()
        self.train_steps()
        return self.finish()

    def train_steps(self) -> None:
        """The steps with the validation cadence (every ``train.val_loss_every`` steps and at the end) and the
        wallclock stop agreed across ranks; the training clock runs from the first step to the last validation."""
        t = self.cfg.train
        self._clock_start()
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
            if self._after_step(r) and self.stop_after is None:
                self.stop_after = r.step
        self._clock_stop(count=False)  # training ended with the last validation

    def _after_step(self, r: StepResult) -> bool:
        """What :meth:`train_steps` does between steps; returns whether the training time reached the cap on any
        rank (the run folder also checkpoints and stops on SIGTERM here)."""
        return self.wallclock_reached()

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

    # -- stage 4: finish --------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Apply the weight average, switch QAT off, export the artifact, score it after the round trip and send
        the summary to the sink; returns the summary."""
        state, averaged = self._final_state()
        return self._score_and_export(state, averaged=averaged)

    def _final_state(self) -> tuple[dict[str, torch.Tensor], bool]:
        """The trained weights as exported (the weight average applied, QAT off, the recurrence as evaluated), on
        CPU, and whether they are an average."""
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
            self.metric(event=f"{cfg.averaging.mode}_applied", step=self.steps_done, count=self.averager.count)
        elif self.averager.count:
            self.log(f"{cfg.averaging.mode}:not_applied snapshots:{self.averager.count} "
                     f"(fewer than averaging.swa_min_snapshots={cfg.averaging.swa_min_snapshots})")
        self.qat.switch_off()  # evaluation and export see the real weights
        self.loop.for_evaluation()
        # A copy: on CPU .cpu() would alias the parameters, which the artifact round trip overwrites.
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.base.state_dict().items()}
        return state, avg is not None

    def _summary_records(self) -> dict[str, Any]:
        """What the summary adds at its end (the run folder: the dataset's identity)."""
        return {}

    def _score_ttt(self, tag: str) -> dict[str, Any]:
        """``eval.ttt``: the round-tripped weights scored again with test-time training (pgolf.core.ttt, on a copy),
        its wall time beside the challenge's evaluation budget."""
        c, d = self.cfg, self.d
        res = ttt.eval_ttt_phased(self.base, self.val_final, self.luts, c.eval, bos_id=c.model.bos_id,
                                  global_seq_len=c.eval.ttt_global_seq_len or c.eval.seq_len or c.train.train_seq_len,
                                  seed=c.train.seed, rank=d.rank, world_size=d.world_size, device=d.device,
                                  autocast=self.use_autocast, log=self.log if d.master else None)
        self.log(f"final_{tag}_ttt_phased val_loss:{res.val_loss:.8f} val_bpb:{res.val_bpb:.8f} "
                 f"eval_time:{1000.0 * res.eval_time_s:.0f}ms")
        self.log(f"ttt_eval_time:{res.eval_time_s:.1f}s (challenge eval budget {ttt.EVAL_BUDGET_SECONDS:.0f}s on "
                 f"8xH100; here {d.world_size}x{d.device.type})")
        return {"ttt_mode": c.eval.ttt, "ttt_val_loss": res.val_loss, "ttt_val_bpb": res.val_bpb,
                "ttt_tokens_scored": res.tokens, "ttt_bytes_scored": res.bytes, "ttt_docs": res.docs,
                "ttt_global_phases": res.phases, "ttt_eval_time_s": res.eval_time_s,
                "eval_budget_s": ttt.EVAL_BUDGET_SECONDS}

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
        restored = load_artifact(blob, check_finite=False,  # check_finite_artifact names the trained max |w|
                                 pergroup=cfg.export.compressor == "pergroup")
        check_finite_artifact(state, restored)
        tag = artifact_format(report)
        if d.master:
            self.log(f"Code size: {code} bytes ({accounting.CODE_BYTES_NOTE})")
            self.sink.artifact(artifact_filename(report), blob, report)
            self.log(f"Serialized model {tag}: {len(blob)} bytes (payload:{report['payload_bytes']} "
                     f"raw_torch:{report['serialized_bytes']} payload_ratio:"
                     f"{report['raw_bytes'] / max(report['payload_bytes'], 1):.2f}x)")
            self.log(f"Total submission size {tag}: {len(blob) + code} bytes")
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
        ttt_fields = self._score_ttt(tag) if cfg.eval.ttt != "off" else {}
        summary = {
            "status": "finished", "name": self.name, **self.labels, "steps": step,
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
            "device": d.device.type, "world_size": d.world_size, **self._summary_records(), **ttt_fields,
        }
        if over_cap and cfg.export.require_fit:
            summary.update(status="failed", error=f"export.require_fit: {over_cap}")
        if d.master:
            self.sink.summary(summary)
        if over_cap and cfg.export.require_fit:
            raise accounting.OverCapError(summary["error"])
        return summary





def release_dist(trainer: TrainLoop) -> None:
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

