"""Every notebook executes end to end through papermill with a tiny budget, training included.

nbval (``pytest notebooks/``) runs the notebooks with their real parameters in reuse-only mode against the
committed runs, so it never trains; this file covers the training path: each notebook trains a 2-layer
width-64 model for 2 steps (the protocol's micro scale with a 2-step budget, 2 seeds so the paired tests run)
into a temporary ``PGOLF_OUT`` and must succeed and write its figure. The notebooks share one output folder
and run in order, so 02-05 reuse the shared control runs that 01 trained, as they do with the real settings.
"""

from __future__ import annotations

import pytest

from pgolf.research.notebooks import list_notebooks, run_notebook

pytest.importorskip("papermill")

MICRO = {  # tiny enough for CI: a training step takes well under a second on one thread
    "model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
    "train.train_seq_len": 64, "train.train_batch_tokens": 1024, "train.max_wallclock_seconds": 0,
    "schedule.warmdown_iters": 1, "train.val_loss_every": 0, "optim.muon_momentum_warmup_steps": 1,
    "eval.max_tokens": 4096, "train.val_batch_size": 4096, "export.keep_float_max_numel": 1024,
}
COMMON = {"budget_steps": 2, "common": MICRO}
SMOKE = {"train.iterations": 2, "schedule.warmdown_iters": 1, "optim.muon_momentum_warmup_steps": 1,
         "eval.max_tokens": 4096, "train.val_batch_size": 4096}  # on top of the protocol's micro scale
STUDY = {"scales": ["micro"], "overrides": SMOKE}
PARAMS = {
    "00_quickstart": COMMON,
    "01_swiglu_vs_relu2": {**STUDY, "seeds": {"micro": [0, 1]}},
    "02_qat": {**STUDY, "seeds": {"micro": [0, 1]}, "qat_bits": {"micro": [4]}},
    "03_smeargate": {**STUDY, "seeds": {"micro": [0, 1]}},
    "04_eval": {"overrides": SMOKE, "seeds": [0, 1], "eval_tokens": 2048, "strides": [0, 32], "eval_lens": [128, 256]},
    "05_compression": {"overrides": SMOKE, "seeds": [0, 1], "eval_tokens": 2048, "bit_grid": [[8, 8], [6, 4]],
                       "compressors": ["zlib", "zstd"], "prune_fracs": [0.0, 0.03], "calibrate": False},
    "06_frontier": {"overrides": {**SMOKE, "train.iterations": 4}, "seeds": [0, 1], "bits": [4], "eval_tokens": 2048,
                    "calibration_batches": 2, "rd_quantile_bits": [4, 5], "rd_sdclip_bits": [4],
                    "rd_sigmas": [3, 12.85]},
    "07_test_time_training": {"overrides": SMOKE, "seeds": [0, 1], "eval_tokens": 2048},
}
FIGURES = {
    "00_quickstart": ["quickstart.svg"],
    "01_swiglu_vs_relu2": ["swiglu_vs_relu2.svg"],
    "02_qat": ["qat.svg"],
    "03_smeargate": ["smeargate.svg"],
    "04_eval": ["eval.svg"],
    "05_compression": ["compression.svg"],
    "06_frontier": ["frontier.svg", "rate_distortion.svg"],
    "07_test_time_training": [],  # a scratch study: tables only, nothing published under runs/ or figures/
}


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    """One PGOLF_OUT for the whole module; the kernels inherit it when they start."""
    root = tmp_path_factory.mktemp("notebooks_out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGOLF_OUT", str(root))
        mp.delenv("PGOLF_ABLATE_MODE", raising=False)  # these runs must train
        yield root


def test_every_notebook_has_tiny_parameters_here():
    assert sorted(p.stem for p in list_notebooks()) == sorted(PARAMS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_notebook_runs_and_writes_its_figures(name, out_root):
    output = run_notebook(name, PARAMS[name], out_dir=out_root / "executed")
    assert output.is_file()
    for fig in FIGURES[name]:
        path = out_root / "figures" / fig
        assert path.is_file() and path.stat().st_size > 1000, f"{name} did not write {path}"
    if name in ("02_qat", "04_eval", "05_compression", "06_frontier"):
        assert any((out_root / "runs").glob("*/analysis/*.json")), "derived tables are stored beside the runs"
