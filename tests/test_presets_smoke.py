"""Every preset at its real size trains a few steps on the embedded corpus and goes through export and
scoring (tiny batches and a capped validation set, so it fits a CPU)."""

import pytest

from pgolf.core.train import train
from pgolf.running.presets import PRESETS, get_preset


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_exports_and_scores(name, small_dataset, tmp_path):
    cfg = get_preset(name).replace({
        "data.path": str(small_dataset), "model.vocab_size": 1024,  # the small dataset's tokenizer (PR #1394: 8192)
        "train.iterations": 2, "train.max_wallclock_seconds": 0,
        "train.warmup_steps": 0, "train.val_loss_every": 0, "train.train_seq_len": 128,
        "train.train_batch_tokens": 256, "train.grad_accum_steps": 1, "train.val_batch_size": 4096,
        "eval.max_tokens": 2048, "eval.seq_len": 256 if get_preset(name).eval.seq_len else 0,
        "qat.start_frac": 0.0, "averaging.swa_start_lr_scale": 1.1, "averaging.swa_every": 1,
    })
    s = train(cfg, tmp_path / name, console=False)
    assert s["status"] == "finished" and s["steps"] == 2
    assert s["artifact_bytes"] > 0 and s["q_val_bpb"] > 0
    if cfg.qat.enabled:
        assert s["qat_step"] == 0
    if cfg.averaging.mode == "swa":
        assert s["averaged_snapshots"] == 2


# Seeds that state their artifact fits under the cap (seed 000 states no size; PR #194 states "15.33 MiB",
# which is 16,074,670 decimal bytes, i.e. over the 16,000,000-byte cap as written), with the code bytes the
# PR counted where pgolf's own (its modules: ~166 KB) would decide the answer: PR #326's single file is
# 56,766 bytes; its Gaussian surrogate artifact is 15,880,876 bytes (the PR measured 15,818,344 on its
# trained weights), which fits with the PR's code and not with pgolf's.
SEEDS_CLAIMING_FIT = {"pr128_int6_mlp3x_qat_sliding": None, "pr314_11l_int4mlp_bigram_swa": None,
                      "pr326_qat_ntk_cosine_swa": 56_766}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SEEDS_CLAIMING_FIT))
def test_size_report_predicts_fit(name):
    """Real-size Gaussian stand-in for trained weights (see pgolf.running.sizing); fresh init would be far smaller."""
    from pgolf.core.accounting import fits
    from pgolf.running.sizing import size_report_for
    r = size_report_for(get_preset(name), detail=False)
    code = SEEDS_CLAIMING_FIT[name] or r["code_bytes"]
    assert fits(r["surrogate_bytes"], code), (name, r["surrogate_bytes"], code)
    assert r["total_bytes"] < r["surrogate_total_bytes"]
