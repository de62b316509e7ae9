"""pgolf's runs: the training loop (:class:`pgolf.core.train_loop.TrainLoop`) recorded in a run folder.

``train(cfg, run_dir)`` is the whole run as a library call: it trains, validates, averages, exports, scores
the round-tripped artifact and returns the summary it writes to ``summary.json``. :class:`Trainer` is the loop
with the run folder around it, which ``train`` (through :meth:`Trainer.run`), ``pgolf bench``, ``pgolf doctor``
and the tests call; nothing outside this module and the loop's uses a private member. What it adds to the loop:

- the run folder: rank 0 claims it and holds its lock for the whole run; ``config.json``, ``dataset.json``,
  ``environment.json``, ``status.json`` (running / finished / failed / interrupted), ``train.log``,
  ``metrics.jsonl``, ``export_report.json``, ``summary.json`` and the artifact (:class:`RunWriter` is the
  loop's sink);
- ``checkpoint()`` every ``train.checkpoint_every`` steps and ``--resume`` from it;
- SIGTERM handled as Ctrl-C, at a step boundary agreed across ranks (:class:`StopSignals`);
- the trained (averaged) weights go to ``final_model.pt`` before export and final scoring (written even with
  ``train.save_raw_model=false`` when export or scoring then fails), with ``training_end.json`` beside them,
  so that ``--resume`` exports and scores them without training again.

Nothing is lost or silent when a run ends early: Ctrl-C marks the run ``interrupted``, any other error
``failed``; a resume cuts the log and metrics rows the interrupted attempt wrote after its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pgolf.core.config import Config
from pgolf.core.data.identity import check_same_dataset, verify_dataset
from pgolf.core.evaluate import EvalResult
from pgolf.core.finite import NonFiniteLossError, NonFiniteScoreError  # noqa: F401 - re-exported
from pgolf.core.ownership import process_identity
from pgolf.core.run_data import load_data  # noqa: F401 - re-exported (pgolf score)
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
from pgolf.core.train_loop import (  # noqa: F401 - re-exported: pgolf.core.train is where tools import them
    StepResult,
    TrainerHooks,
    TrainLoop,
    batch_tokens_trained,
    prepare_model,
    release_dist,
)

# Bumped when the checkpoint layout changes; v2: RNG states as tensors and plain values (weights-only loading).
CHECKPOINT_FORMAT = "pgolf_checkpoint_v2"
TRAINING_END_FORMAT = "pgolf_training_end_v1"


class Trainer(TrainLoop):
    """The training loop in a run folder; :func:`train` runs it and marks how the run ended::

        with Trainer(cfg, run_dir) as tr:  # claims the run folder; on an exception marks it failed/interrupted
            tr.setup()                     # + config.json, dataset.json, environment.json, status running
            for _ in range(cfg.train.iterations):
                tr.step()                  # one optimizer step -> StepResult (a metrics.jsonl row)
            tr.evaluate()
            summary = tr.finish()          # + final_model.pt, the artifact, summary.json, status finished

    :meth:`run` adds to the loop's: checkpoints every ``train.checkpoint_every`` steps, the stop on SIGTERM
    agreed across ranks, and ``--resume``. ``run_dir=None``: no folder (the log goes to the terminal only).
    """

    def __init__(self, cfg: Config, run_dir: Path | str | None = None, *, resume: bool = False, console: bool = True,
                 labels: dict[str, Any] | None = None, hooks: TrainerHooks | None = None):
        super().__init__(cfg, console=console, hooks=hooks)
        self.labels = dict(labels or {})  # copied into summary.json (e.g. ablation arm names); not config
        self.resume = resume
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.name = self.run_dir.name if self.run_dir is not None else None
        self.stop_signals = StopSignals()  # SIGTERM handling while run() runs
        self.finish_only: dict[str, Any] | None = None  # resume of a run whose training ended (training_end.json)
        # Last, so that nothing after it can fail and leave the lock held: close() releases it.
        self.lock, stale = (claim_run_dir(self.run_dir, resume=resume) if self.d.master and self.run_dir is not None
                            else (None, []))
        self.out = self.sink = RunWriter(self.run_dir, enabled=self.d.master, console=console)
        self.log_sizes_at_start = self.out.log_sizes()  # a resume cuts from the checkpoint up to here
        for p in stale:
            self.log(f"cleanup: removed {p.relative_to(self.run_dir)} (temp file of a writer that died)")

    # -- lifetime -------------------------------------------------------------------------------
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
        super().close()


    # -- stage 1: set-up (the run folder's records; a resume restores the checkpoint) ----------------------
    # The loop's set-up (TrainLoop.setup) calls these: config.json, dataset.json and environment.json are written
    # (not on resume) and the run marked running; the dataset is checked against its manifest (its identity goes
    # into the records and the summary); a resume restores the checkpoint instead of the fresh start (or, when
    # training had ended, reads training_end.json).
    def _on_setup(self) -> None:
        if not self.resume:
            self.out.json("config.json", self.cfg.to_dict())
        self.out.status("running", rank_count=self.d.world_size, **process_identity())

    def _on_dataset(self) -> None:
        self.dataset_id = verify_dataset(self.ds, self.cfg.model.vocab_size)  # names the file that disagrees

    def _on_data(self) -> None:
        if not self.resume:
            self.out.json("dataset.json", self.dataset_id.record())
            self.out.json("environment.json", {**environment(), "dataset_sha256": self.dataset_id.sha256})
        for line in self.dataset_id.log_lines():
            self.log(line)

    def _summary_records(self) -> dict[str, Any]:
        return {"dataset_sha256": self.dataset_id.sha256, "dataset_path": self.dataset_id.path,
                "unigram_val_bpb": self.dataset_id.unigram_val_bpb}

    def _start(self) -> None:
        if not self.resume:
            super()._start()
        elif self.run_dir is not None and (self.run_dir / TRAINING_END).exists():
            self.finish_only = self._read_training_end()
        else:
            self.steps_done, self.training_time_ms = self._restore()

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """:meth:`setup`, the training loop with checkpoints and the SIGTERM stop, :meth:`finish`; returns the
        summary."""
        with self.stop_signals as stop:
            self.setup()
            if self.finish_only is not None:
                return self.finish_from_raw()
            stop.deferred = True  # SIGTERM from here on: stop at a step boundary, agreed across ranks
            self.train_steps()
            stop.deferred = False
            if stop.received is not None:  # came during the last step: finish() stops once the weights are saved
                self.log(f"stop_requested: {signal.Signals(stop.received).name} after the last step")
            return self.finish()

    def _after_step(self, r: StepResult) -> bool:
        """A checkpoint when due, then one agreement across ranks on SIGTERM and the wallclock cap: on SIGTERM
        every rank writes the checkpoint and stops (:class:`StopRequested`)."""
        t, stop = self.cfg.train, self.stop_signals
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
        return cap_reached

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
        """The loop's finish (:meth:`TrainLoop.finish`) with the raw weights saved first (``final_model.pt``),
        ``summary.json`` written and the run marked finished; returns the summary."""
        cfg = self.cfg
        state, averaged = self._final_state()
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



def train(cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False, console: bool = True,
          labels: dict[str, Any] | None = None, hooks: TrainerHooks | None = None) -> dict[str, Any]:
    """Train, export and score one run (:meth:`Trainer.run`); returns the summary. Marks the run failed on any
    error, and ``interrupted`` on Ctrl-C (KeyboardInterrupt), which ``--resume`` continues from the last checkpoint.

    ``labels`` (e.g. ablation arm names) are copied into ``summary.json``; they are not config. ``hooks``
    (:class:`TrainerHooks`) observe the steps (a progress bar) or inject faults (tests)."""
    with Trainer(cfg, run_dir, resume=resume, console=console, labels=labels, hooks=hooks) as trainer:
        return trainer.run()

