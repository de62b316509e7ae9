"""Scoring saved weights again, outside training, for the analyses: a run's raw weights, the first N
validation targets of a dataset, and the val_bpb of a state dict on them (one process, CPU).

The whole evaluation stream is loaded with ``tail="score"`` and cut to ``n_tokens + 1`` tokens, so every
setting an analysis compares (bit width, stride, length) scores exactly the same targets. ``pgolf eval``
(:mod:`pgolf.running.scoring`) is the other way to score weights: it reproduces a run's own final score on its
whole dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pgolf.core.config import Config, DataConfig
from pgolf.core.data.loader import load_validation_tokens, resolve_dataset
from pgolf.core.data.tokenizer import load_tokenizer
from pgolf.core.evaluate import ByteLUTs, EvalResult, eval_windows
from pgolf.core.model import build_model
from pgolf.core.run_data import byte_accounting
from pgolf.core.safe_load import load_plain
from pgolf.research.tables import MissingWeightsError

CPU = torch.device("cpu")
RAW_WEIGHTS = "final_model.pt"  # a run's trained (averaged) weights before export


def load_final_state(run_dir: str | Path) -> dict[str, Tensor]:
    """The raw weights of a run folder; :class:`MissingWeightsError` naming the file when it is absent."""
    path = Path(run_dir) / RAW_WEIGHTS
    if not path.is_file():
        raise MissingWeightsError(f"{path}: no raw weights (they are kept local, not committed; "
                                  f"retraining the run writes them)", path)
    return load_plain(path, name=path, kind=f"pgolf model state ({RAW_WEIGHTS})")


def validation_slice(*, cfg: Config, dataset: str | Path, n_tokens: int) -> tuple[Tensor, ByteLUTs]:
    """The first ``n_tokens`` validation targets of ``dataset`` (``n_tokens + 1`` tokens) and its byte tables."""
    ds = resolve_dataset(DataConfig(path=str(dataset)), cfg.model.vocab_size)
    sp = load_tokenizer(ds.tokenizer_path)
    if int(sp.vocab_size()) != cfg.model.vocab_size:
        raise ValueError(f"{ds.tokenizer_path}: vocab_size {int(sp.vocab_size())} does not match the model's "
                         f"model.vocab_size={cfg.model.vocab_size}")
    luts = byte_accounting(cfg, ds, sp, CPU)  # the byte tables, or a CaseOps dataset's sidecar (data.caseops)
    tokens = load_validation_tokens(ds.val_files, cfg.train.train_seq_len, tail="score")
    if n_tokens < 1 or tokens.numel() < n_tokens + 1:
        raise ValueError(f"n_tokens={n_tokens}: expected 1..{tokens.numel() - 1}, the validation targets of "
                         f"{ds.root}")
    return tokens[: n_tokens + 1], luts


def score_state(*, cfg: Config, state: dict[str, Tensor], tokens: Tensor, luts: ByteLUTs, seq_len: int | None = None,
                stride: int = 0, batch_seqs: int = 32, ntk: bool | None = None) -> EvalResult:
    """val_bpb of ``state`` on every target of ``tokens``: windows of ``seq_len`` (default: the training
    length) every ``stride`` tokens (0: non-overlapping), the last partial window scored. ``ntk`` overrides
    the config's ``eval.ntk`` (NTK RoPE scaling past the training length)."""
    model = build_model(cfg if ntk is None else cfg.replace({"eval.ntk": ntk}))
    model.load_state_dict(state, strict=True)
    return eval_windows(model, tokens, luts, seq_len or cfg.train.train_seq_len, stride, "score", batch_seqs, 0, 1,
                        CPU, False)


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread inside (timings comparable with the 1-thread ablation workers), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class SavedRun:
    """A run's config and raw weights, with the first ``eval_tokens`` validation targets of a dataset."""

    run_id: str  # <scale>/<run folder>: how the analysis tables name the run
    cfg: Config
    state: dict[str, Tensor]
    tokens: Tensor
    luts: ByteLUTs

    def score(self, state: dict[str, Tensor] | None = None, **kw) -> EvalResult:
        """:func:`score_state` of ``state`` (default: the run's own raw weights) on the run's targets."""
        return score_state(cfg=self.cfg, state=self.state if state is None else state, tokens=self.tokens,
                           luts=self.luts, **kw)


def saved_runs(run_dirs: Iterable[str | Path], *, dataset: str | Path, eval_tokens: int) -> Iterator[SavedRun]:
    """Each run of ``run_dirs`` loaded for scoring, one at a time (the weights of one run in memory)."""
    for run_dir in map(Path, run_dirs):
        cfg = Config.from_json(run_dir / "config.json")
        tokens, luts = validation_slice(cfg=cfg, dataset=dataset, n_tokens=eval_tokens)
        yield SavedRun(run_id(run_dir), cfg, load_final_state(run_dir), tokens, luts)


def run_id(run_dir: str | Path) -> str:
    """``<scale>/<run folder>``: how analysis tables and their inputs name a run (no absolute path)."""
    run_dir = Path(run_dir)
    return f"{run_dir.parent.name}/{run_dir.name}"
