import pytest
import torch

from pgolf.core.config import Config, apply_overrides
from pgolf.core.evaluate import ByteLUTs, eval_official, eval_windows, windows
from pgolf.core.model import build_model


@pytest.mark.parametrize("n, L, S", [(100, 16, 4), (97, 16, 16), (16, 16, 4), (17, 16, 5), (1000, 64, 64), (130, 32, 7)])
def test_sliding_windows_score_every_token_once_with_context(n, L, S):
    counts = torch.zeros(n, dtype=torch.long)
    for start, end, score_from in windows(n, L, S, tail="score"):
        assert end - start <= L and start <= score_from < end
        counts[score_from:end] += 1
        if start > 0:
            assert score_from - start >= L - S  # at least L - S tokens of context
    assert torch.all(counts == 1)


@pytest.mark.parametrize("n, L, S, repeated", [
    (1024, 256, 64, {(960, 1024): 4}),  # last full window + 3 trailing windows all score [960, 1024)
    (1000, 256, 64, {(936, 960): 4, (960, 1000): 3}),  # trailing windows score [936, 1000); ws=960 has < S
])
def test_sliding_rescore_tail_repeats_the_last_stride(n, L, S, repeated):
    """PR #128's rule: windows start every S while >= S targets remain; trailing ones re-score their last S."""
    wins = windows(n, L, S, window_rule="rescore_tail")
    counts = torch.zeros(n, dtype=torch.long)
    for start, end, score_from in wins:
        assert start % S == 0 and end == min(start + L, n) and end - start >= S
        assert score_from == (0 if start == 0 else end - S)
        counts[score_from:end] += 1
    want = torch.ones(n, dtype=torch.long)
    for (a, b), c in repeated.items():
        want[a:b] = c
    assert torch.equal(counts, want)
    assert windows(n, L, S) != wins  # the default ("once") scores each target once


def test_non_overlapping_tail_modes():
    drop = windows(100, 16, 0, tail="drop")
    assert len(drop) == 6 and drop[-1] == (80, 96, 80)
    score = windows(100, 16, 0, tail="score")
    assert score[-1] == (96, 100, 96)
    assert sum(e - f for _, e, f in score) == 100


def _model_and_luts():
    c = apply_overrides(Config(), {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4,
                                   "model.num_kv_heads": 2})
    torch.manual_seed(0)
    m = build_model(c)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(1)
    luts = ByteLUTs(torch.randint(1, 4, (1024,), generator=g, dtype=torch.int16),
                    torch.rand(1024, generator=g) < 0.3, torch.rand(1024, generator=g) < 0.05)
    return m, luts


def test_window_evaluator_matches_official_on_full_windows():
    m, luts = _model_and_luts()
    tokens = torch.randint(0, 1024, (32 * 8 + 1,))
    off = eval_official(m, tokens, luts, 32, 32 * 4, 0, 1, 1, torch.device("cpu"), False)
    win = eval_windows(m, tokens, luts, 32, 0, "drop", 3, 0, 1, torch.device("cpu"), False)
    assert win.tokens == off.tokens == 256 and win.bytes == off.bytes
    assert win.val_loss == pytest.approx(off.val_loss, abs=1e-6)
    full = eval_windows(m, torch.randint(0, 1024, (32 * 8 + 11,)), luts, 32, 0, "score", 3, 0, 1, torch.device("cpu"), False)
    assert full.tokens == 32 * 8 + 10


def test_sliding_eval_counts_and_rank_split():
    m, luts = _model_and_luts()
    tokens = torch.randint(0, 1024, (301,))
    r = eval_windows(m, tokens, luts, 64, 16, "score", 4, 0, 1, torch.device("cpu"), False)
    assert r.tokens == 300
    halves = [eval_windows(m, tokens, luts, 64, 16, "score", 4, k, 2, torch.device("cpu"), False) for k in (0, 1)]
    assert sum(h.tokens for h in halves) == 300  # without a process group each rank reports its own share
    # byte count is exactly the LUT rule on every scored (prev, target) pair
    x, y = tokens[:-1].long(), tokens[1:].long()
    expected = (luts.base_bytes[y].long() + (luts.has_leading_space[y] & ~luts.is_boundary[x]).long()).sum()
    assert r.bytes == int(expected)


def test_rescore_tail_rule_is_the_records_window_selection():
    """eval.window_rule=rescore_tail (PR #124's rule in the records): windows every S while >= S targets
    remain; each later window scores its last S, so the last S targets are scored once per trailing window."""
    wins = windows(640, 128, 64, window_rule="rescore_tail")
    assert [w[0] for w in wins] == list(range(0, 577, 64))
    assert wins[0] == (0, 128, 0) and wins[1] == (64, 192, 128) and wins[-1] == (576, 640, 576)
    counts = torch.zeros(640, dtype=torch.long)
    for _, end, score_from in wins:
        counts[score_from:end] += 1
    assert torch.all(counts[:576] == 1) and torch.all(counts[576:] == 2)
    # a stream that is not a multiple of the window: trailing windows down to S targets
    wins = windows(100, 16, 4, window_rule="rescore_tail")
    assert wins[-1] == (96, 100, 96) and sum(e - f for _, e, f in wins) == 100 + 3 * 4
def test_sliding_rescore_config_and_truncated_stream(small_dataset):
    from pgolf.core.config import ConfigError
    from pgolf.core.train import Dist, load_data

    with pytest.raises(ConfigError, match="eval.window_rule"):
        apply_overrides(Config(), {"eval.window_rule": "rescore_tail"})  # needs sliding windows
    base = {"data.path": str(small_dataset), "train.train_seq_len": 1000, "eval.stride": 64}
    d = Dist(0, 1, 0, torch.device("cpu"), False)
    *_, once_final, official = load_data(apply_overrides(Config(), base), d)
    _, _, _, periodic, final, _ = load_data(apply_overrides(Config(), {**base, "eval.window_rule": "rescore_tail"}), d)
    assert not official
    assert torch.equal(final, periodic) and (final.numel() - 1) % 1000 == 0  # the PRs' truncated stream
    assert once_final.numel() > final.numel()  # "once" scores the tail too


def test_sliding_eval_equals_per_window_reference():
    """The batched, masked accounting equals scoring each window on its own (loss summed per window)."""
    m, luts = _model_and_luts()
    m.eval()
    tokens = torch.randint(0, 1024, (413,), generator=torch.Generator().manual_seed(3))
    for L, S, tail, rule in ((64, 16, "score", "once"), (64, 0, "score", "once"), (64, 48, "drop", "once"),
                             (64, 16, "drop", "rescore_tail")):
        got = eval_windows(m, tokens, luts, L, S, tail, 5, 0, 1, torch.device("cpu"), False, rule)
        loss, n, nbytes = 0.0, 0, 0
        with torch.no_grad():
            for s, e, f in windows(tokens.numel() - 1, L, S, tail, rule):
                x, y = tokens[s:e][None].long(), tokens[s + 1:e + 1][None].long()
                nll = m(x, y, reduction="none").double()[f - s:]
                loss += float(nll.sum())
                n += e - f
                nbytes += int(luts.count(x[0, f - s:], y[0, f - s:]))
        assert (got.tokens, got.bytes) == (n, nbytes)
        assert got.val_loss == pytest.approx(loss / n, rel=1e-12)


def test_sliding_full_windows_rule():
    """eval.window_rule=full_windows (PR #326): full windows only, first scores all, later ones their last
    S; the targets after the last full window are not scored."""
    n, L, S = 1000, 256, 48
    wins = windows(n, L, S, window_rule="full_windows")
    assert all(e - s == L for s, e, _ in wins) and wins[0] == (0, L, 0)
    scored = [t for _, e, f in wins for t in range(f, e)]
    last_end = wins[-1][1]
    assert scored == list(range(last_end)) and wins[-1][0] == 720 and last_end == 976  # 976..999 unscored
    with pytest.raises(Exception, match="eval.window_rule"):
        apply_overrides(Config(), {"eval.window_rule": "full_windows"})  # needs sliding windows


def test_fixed_batch_pads_without_changing_the_score():
    """Padding the last (and tail) batch to batch_seqs rows that score nothing gives the same sums; the
    padded call sees one batch shape per window length (what a compiled forward needs)."""
    m, luts = _model_and_luts()
    tokens = torch.randint(0, 1024, (64 * 5 + 37,), generator=torch.Generator().manual_seed(2))
    shapes = []
    hook = m.register_forward_hook(lambda mod, args, out: shapes.append(tuple(args[0].shape)))
    plain = eval_windows(m, tokens, luts, 64, 16, "score", 4, 0, 1, torch.device("cpu"), False)
    n_plain = len(shapes)
    shapes.clear()
    padded = eval_windows(m, tokens, luts, 64, 16, "score", 4, 0, 1, torch.device("cpu"), False, fixed_batch=True)
    hook.remove()
    assert (padded.tokens, padded.bytes) == (plain.tokens, plain.bytes)
    assert padded.val_loss == pytest.approx(plain.val_loss, rel=1e-6)  # batch shape may change CPU kernel rounding
    assert len(shapes) == n_plain
    assert {s[0] for s in shapes} == {4}, shapes  # every batch padded to 4 rows


@pytest.mark.parametrize("part_seqs", [1, 5, 16])
def test_a_batch_mean_in_parts_has_the_whole_batch_bits(part_seqs):
    from pgolf.core.evaluate import batch_mean_loss
    m, _ = _model_and_luts()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, 1024, (37, 32), generator=g), torch.randint(0, 1024, (37, 32), generator=g)
    with torch.inference_mode():
        assert torch.equal(batch_mean_loss(m, x, y, part_seqs), m(x, y))


@pytest.mark.parametrize("n", [65_536, 50_176, 1_000])
def test_nll_loss_of_minus_the_token_losses_sums_in_cross_entropys_order(n):
    """The reduction batch_mean_loss relies on, at the official evaluator's batch sizes (65,536 and the 392-sequence
    last batch of micro's validation split, where ``nll.mean()`` differs in the last bit)."""
    g = torch.Generator().manual_seed(n)
    logits, y = torch.randn(n, 64, generator=g) * 3, torch.randint(0, 64, (n,), generator=g)
    nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    again = torch.nn.functional.nll_loss(nll.neg().unsqueeze(1), torch.zeros(n, dtype=torch.int64))
    assert torch.equal(again, torch.nn.functional.cross_entropy(logits, y))


def test_official_eval_in_parts_gives_the_same_score():
    m, luts = _model_and_luts()
    tokens = torch.randint(0, 1024, (32 * 23 + 1,), generator=torch.Generator().manual_seed(3))
    whole = eval_official(m, tokens, luts, 32, 32 * 8, 0, 1, 1, torch.device("cpu"), False)
    parts = eval_official(m, tokens, luts, 32, 32 * 8, 0, 1, 1, torch.device("cpu"), False, part_seqs=3)
    assert (parts.val_loss, parts.val_bpb, parts.tokens, parts.bytes) == \
        (whole.val_loss, whole.val_bpb, whole.tokens, whole.bytes)


def test_the_trainer_evaluates_in_training_sized_parts_on_cpu_only_when_eager():
    from pgolf.running.bench import build_trainer
    from pgolf.running.presets import get_preset
    tr = build_trainer(get_preset("micro"))
    assert tr.official_eval_part_seqs() == 2048 // 128  # one training micro-batch: 16 sequences
    tr.compiled = True
    assert tr.official_eval_part_seqs() == 0
