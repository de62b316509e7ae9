"""Phased score-first LoRA test-time training (``eval.ttt=phased_lora``, pgolf.core.ttt): its legality (a score
never depends on a token after it), the adapters' hooks, and the document/phase bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.core import ttt
from pgolf.core.config import Config, ConfigError, apply_overrides
from pgolf.core.evaluate import ByteLUTs
from pgolf.core.model import build_model

VOCAB, BOS = 48, 1
LENGTHS = (23, 9, 31, 17, 12, 26, 6)  # documents of the test stream, BOS first (each scores the next BOS)


def _cfg(**over) -> Config:
    base = {"model.vocab_size": VOCAB, "model.num_layers": 4, "model.model_dim": 32, "model.num_heads": 4,
            "model.num_kv_heads": 2, "model.mlp_mult": 2, "train.train_seq_len": 16, "model.loop_layers": (1, 2),
            "model.loop_count": 1, "model.parallel_start_layer": 3,
            "model.control_patterns": (*Config().model.control_patterns, "parallel_resid_lambdas",
                                       "parallel_post_lambdas"),
            "eval.ttt": "phased_lora", "eval.ttt_lora_rank": 4, "eval.ttt_chunk_size": 4, "eval.ttt_eval_seq_len": 10,
            "eval.ttt_batch_size": 2, "eval.ttt_lora_lr": 0.02, "eval.ttt_weight_decay": 0.5, "eval.ttt_beta2": 0.99,
            "eval.ttt_prefix_docs": 4, "eval.ttt_num_phases": 2, "eval.ttt_global_lr": 0.02,
            "eval.ttt_global_chunk_tokens": 24, "eval.ttt_global_batch_seqs": 2}
    return apply_overrides(Config(), {**base, **over})


def _model(cfg: Config):
    torch.manual_seed(0)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.looping_active = True
    return model


def _stream(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    parts = []
    for n in LENGTHS:
        parts += [torch.tensor([BOS]), torch.randint(2, VOCAB, (n - 1,), generator=g)]
    return torch.cat(parts)


def _luts() -> ByteLUTs:
    rng = np.random.default_rng(0)
    base = rng.integers(1, 4, VOCAB).astype(np.int16)
    space = rng.random(VOCAB) < 0.3
    boundary = np.zeros(VOCAB, dtype=bool)
    boundary[:2] = True
    return ByteLUTs.from_numpy((base, space, boundary), torch.device("cpu"))


def _scores(cfg: Config, tokens: torch.Tensor) -> tuple[dict[tuple[int, int], float], ttt.TTTResult]:
    """Each scored target's loss, by (document, the target's stream position)."""
    out: dict[int, float] = {}

    def keep(cb: ttt.ChunkBatch) -> None:
        for b, ws in enumerate(cb.window_starts):
            for j in cb.scored[b].nonzero(as_tuple=True)[0].tolist():
                out[(cb.doc_ids[b], ws + j + 1)] = cb.losses[b, j].item()
    res = ttt.eval_ttt_phased(_model(cfg), tokens, _luts(), cfg.eval, bos_id=BOS, global_seq_len=8, seed=0,
                              on_chunk=keep)
    return out, res


def _split(cfg: Config, tokens: torch.Tensor) -> tuple[list[int], int, int, list[int]]:
    """The documents of the first two batches of the queue, the first document of the second batch, a cut in
    the middle of its third chunk (a chunk trained on after it is scored), and the documents of the later
    batches."""
    docs = ttt.find_docs(tokens, BOS)
    queue = [[d for d, _ in batch] for _, batch in ttt.doc_batches(docs, cfg.eval.ttt_batch_size)]
    d = queue[1][0]
    chunk = cfg.eval.ttt_chunk_size
    assert docs[d][1] - 1 > 3 * chunk
    return queue[0] + queue[1], d, docs[d][0] + 2 * chunk + chunk // 2, [e for b in queue[2:] for e in b]


def _perturbed(tokens: torch.Tensor, d: int, cut: int, later: list[int]) -> torch.Tensor:
    """Every token after ``cut`` in processing order changed (document ``d`` after the cut, every document of a
    later batch); the document boundaries (BOS) kept."""
    docs = ttt.find_docs(tokens, BOS)
    out = tokens.clone()
    positions = list(range(cut + 1, docs[d][0] + docs[d][1]))
    for e in later:
        positions += list(range(docs[e][0], docs[e][0] + docs[e][1]))
    for p in positions:
        if out[p] != BOS:
            out[p] = 2 + (out[p] - 2 + 7) % (VOCAB - 2)
    return out


def _violations(cfg: Config) -> tuple[list, int, int, tuple[int, int]]:
    tokens = _stream()
    done, d, cut, later = _split(cfg, tokens)
    before, _ = _scores(cfg, tokens)
    after, _ = _scores(cfg, _perturbed(tokens, d, cut, later))
    must_match = [k for k in before if k[0] in done and (k[0] != d or k[1] <= cut)]
    changed = [k for k in before if before[k] != after[k]]
    return [k for k in must_match if before[k] != after[k]], len(must_match), len(changed), (d, cut)


def test_no_score_depends_on_a_later_token():
    """Legality: change every token after position ``cut`` (in processing order: the rest of a document from its
    middle on, and every document of a later batch), keep the document boundaries. Every target at or before
    the cut, in that document, its batch partner and the earlier batches, keeps its loss bit for bit; targets after
    the cut change (the test can see a change). Global phases run in between (prefix 4 docs, 2 phases)."""
    bad, n_checked, n_changed, _ = _violations(_cfg())
    assert n_checked > 30 and n_changed > 10
    assert bad == []


def test_legality_test_catches_training_before_scoring(monkeypatch):
    """The same test fails for a variant that trains the adapters on a chunk before scoring it: the targets of
    the cut chunk up to the cut (positions 9 and 10 of its document: chunk 2 holds targets 9..12, cut at 10)
    then depend on the tokens after the cut."""
    def train_then_score(losses_fn, opt, train_rows, chunk_offset, chunk_size, grad_steps):
        if train_rows is not None:
            per_doc = losses_fn()[:, chunk_offset:chunk_offset + chunk_size].mean(dim=-1)
            opt.zero_grad(set_to_none=True)
            (per_doc * train_rows).sum().backward()
            opt.step()
        return losses_fn().detach()

    monkeypatch.setattr(ttt, "_chunk_step", train_then_score)
    bad, _, _, (d, cut) = _violations(_cfg())
    assert bad == [(d, cut - 1), (d, cut)]


def test_zero_adapters_score_as_the_plain_model():
    """Adapters with B = 0 add nothing: a chunk's first scores (before any training) are the model's own per-token
    losses, loop and parallel lanes on; so the hooks reach every block call with the right shapes."""
    cfg = _cfg()
    model = _model(cfg).eval()
    ads = ttt.DocumentAdapters(model, 3, cfg.eval, torch.Generator().manual_seed(0))
    assert ads.num_slots == len(model.encoder_indices) + len(model.decoder_indices) == 6
    x = torch.randint(2, VOCAB, (3, 10))
    y = torch.randint(2, VOCAB, (3, 10))
    with torch.no_grad(), ttt.adapters_attached(model, ads) as start:
        got = ttt.adapted_token_losses(model, ads, start, x, y)
        for lora in ads.modules():
            if isinstance(lora, ttt.BatchedLoRA):
                lora.B.normal_()
        moved = ttt.adapted_token_losses(model, ads, start, x, y)
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are gone on exit
    with torch.no_grad():
        want = model(x, y, reduction="none").view(3, 10)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert (moved - want).abs().max() > 1e-2


def test_a_batch_row_sees_only_its_own_adapter():
    """Changing the adapter of one row changes only that row's losses."""
    cfg = _cfg()
    model = _model(cfg).eval()
    ads = ttt.DocumentAdapters(model, 2, cfg.eval, torch.Generator().manual_seed(0))
    x, y = torch.randint(2, VOCAB, (2, 8)), torch.randint(2, VOCAB, (2, 8))
    with torch.no_grad(), ttt.adapters_attached(model, ads) as start:
        a = ttt.adapted_token_losses(model, ads, start, x, y)
        ads.slots["o"][3].B[1].normal_()
        b = ttt.adapted_token_losses(model, ads, start, x, y)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


def test_result_counts_every_document_target_once():
    cfg = _cfg()
    tokens = _stream()
    scores, res = _scores(cfg, tokens)
    assert res.docs == len(LENGTHS) and res.tokens == sum(LENGTHS) - 1 == len(scores)
    assert res.phases == 2 and res.eval_time_s > 0 and np.isfinite(res.val_bpb)
    bytes_ = _luts().token_bytes(tokens[:-1], tokens[1:]).sum().item()
    assert res.bytes == bytes_
    assert res.val_loss == pytest.approx(sum(scores.values()) / len(scores), rel=1e-9)


def test_a_caseops_byte_sidecar_counts_the_bytes_by_stream_position():
    """With a CaseOps sidecar the bytes of a scored target are ``sidecar[its stream position]``: a sidecar equal to
    the tables' bytes gives the tables' result; one that doubles every byte halves the bpb, the loss unchanged."""
    from pgolf.core.data.sidecar import SidecarBytes

    cfg, tokens = _cfg(), _stream()
    per_pos = torch.cat([torch.zeros(1, dtype=torch.int32),
                         _luts().token_bytes(tokens[:-1], tokens[1:]).to(torch.int32)])  # position 0: no target
    plain = ttt.eval_ttt_phased(_model(cfg), tokens, _luts(), cfg.eval, bos_id=BOS, global_seq_len=8, seed=0)
    same = ttt.eval_ttt_phased(_model(cfg), tokens, SidecarBytes(per_pos, "test"), cfg.eval, bos_id=BOS,
                               global_seq_len=8, seed=0)
    double = ttt.eval_ttt_phased(_model(cfg), tokens, SidecarBytes(2 * per_pos, "test"), cfg.eval, bos_id=BOS,
                                 global_seq_len=8, seed=0)
    assert (same.val_loss, same.val_bpb, same.bytes) == (plain.val_loss, plain.val_bpb, plain.bytes)
    assert double.val_loss == plain.val_loss and double.bytes == 2 * plain.bytes
    assert double.val_bpb == pytest.approx(plain.val_bpb / 2, rel=1e-12)


def test_windows_chunks_and_phases():
    assert ttt.find_docs(torch.tensor([5, 1, 3, 4, 1, 6, 1, 7, 8]), 1) == [(1, 4), (4, 3), (6, 3)]
    # chunk 2 of a 10-target document, chunks of 4, windows of 6: targets 8..9, inputs 4..9
    assert ttt.chunk_window(2, 10, 3, 4, 6) == (4, 6, 4, 2)
    assert ttt.chunk_window(0, 10, 3, 4, 6) == (0, 4, 0, 4)
    queue = ttt.doc_batches([(0, 5), (5, 9), (14, 3), (17, 7), (24, 4)], 2)
    assert queue == [(2, [(1, (5, 9))]), (1, [(0, (0, 5)), (3, (17, 7))]), (0, [(2, (14, 3)), (4, (24, 4))])]
    assert ttt.phase_boundaries(5, 4, 2) == [2, 4] and ttt.phase_boundaries(5, 0, 3) == []
    assert ttt.phase_ends([1, 2, 2], [2, 4]) == [1, 2]
    assert ttt.phase_ends([2, 2, 2], [1, 2]) == [0, 1]  # one phase per batch at most
    assert ttt.doc_segments(torch.tensor([3, 1, 4, 4, 4, 4, 4, 1, 2]), 1, 3) == [(0, 1), (1, 4), (4, 7), (7, 9)]


def test_stream_without_documents_is_a_clear_error():
    cfg = _cfg()
    with pytest.raises(ConfigError, match="model.bos_id=1"):
        ttt.eval_ttt_phased(_model(cfg), torch.full((40,), 3), _luts(), cfg.eval, bos_id=BOS, global_seq_len=8,
                            seed=0)


def test_ttt_without_a_bos_token_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"eval\.ttt: 'phased_lora' reads documents from BOS tokens"):
        apply_overrides(Config(), {"eval.ttt": "phased_lora", "model.bos_id": -1})


@pytest.mark.parametrize("key,value", [("eval.ttt_chunk_size", 0), ("eval.ttt_beta2", 1.0),
                                       ("eval.ttt_prefix_docs", -1), ("eval.ttt", "lora")])
def test_bad_ttt_settings_name_their_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(Config(), {key: value})


@pytest.mark.slow
def test_trainer_reports_the_ttt_score_and_its_eval_time(micro, tmp_path):
    """``eval.ttt=phased_lora`` on a trained micro model: the round-tripped weights are scored again with TTT; the
    summary holds its loss, bpb, documents, phases and wall time beside the 600 s budget, the log its lines."""
    from pgolf.core.train import train

    cfg = micro(**{"eval.max_tokens": 3000, "train.iterations": 2, "eval.ttt": "phased_lora",
                   "eval.ttt_lora_rank": 4, "eval.ttt_chunk_size": 64, "eval.ttt_eval_seq_len": 128,
                   "eval.ttt_batch_size": 4, "eval.ttt_prefix_docs": 1, "eval.ttt_global_chunk_tokens": 512,
                   "eval.ttt_global_batch_seqs": 4})
    s = train(cfg, tmp_path / "ttt", console=False)
    assert s["ttt_mode"] == "phased_lora" and s["ttt_docs"] >= 1 and s["ttt_global_phases"] == 1
    assert s["eval_budget_s"] == 600.0 and 0 < s["ttt_eval_time_s"] < 600 and np.isfinite(s["ttt_val_bpb"])
    assert 0 < s["ttt_tokens_scored"] <= s["val_tokens_scored"]  # documents only (tokens before a first BOS not)
    assert s["ttt_val_bpb"] != s["q_val_bpb"]
    log = (tmp_path / "ttt" / "train.log").read_text()
    assert "_ttt_phased val_loss:" in log and "ttt_eval_time:" in log and "ttpp: phase:1/1" in log


WORKER = '''
import json, sys
import torch
import torch.distributed as dist
sys.path.insert(0, {tests!r})
import test_ttt as T
from pgolf.core import ttt
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
out = {{}}
for name, over in {settings!r}.items():
    cfg = T._cfg(**over)
    res = ttt.eval_ttt_phased(T._model(cfg), T._stream(), T._luts(), cfg.eval, bos_id=T.BOS, global_seq_len=8, seed=0,
                              rank=rank, world_size=world)
    out[name] = [res.val_loss, res.tokens, res.bytes, res.phases]
if rank == 0:
    open({path!r}, "w").write(json.dumps(out))
dist.destroy_process_group()
'''
FROZEN = {"eval.ttt_lora_lr": 0.0, "eval.ttt_weight_decay": 0.0}
# global steps of 4 sequences of 8 tokens: 2 per rank on 2 ranks, all 4 on one
SPLIT = {"eval.ttt_global_chunk_tokens": 32, "eval.ttt_global_batch_seqs": 2}
DIST_SETTINGS = {"frozen": {**FROZEN, "eval.ttt_prefix_docs": 0}, "frozen_phased": {**FROZEN, **SPLIT}, "phased": {}}
SINGLE = {"frozen": {}, "frozen_phased": {"eval.ttt_global_batch_seqs": 4}, "phased": {}}


@pytest.mark.slow
def test_two_gloo_ranks_split_the_documents_and_reduce_the_sums(tmp_path):
    """Two gloo processes. Frozen adapters, no global phase: every score is the model's own, so the reduced loss
    equals one process's. Frozen adapters with global phases: equal to float rounding to one process with the same
    global batch. Everything on: both ranks finish and every target is counted once (the loss differs from one
    process's: a rank's warm-started A passes through other batches, the documented difference)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "out.json"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), settings=DIST_SETTINGS, path=str(path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(path.read_text())
    one = {}
    for name, over in DIST_SETTINGS.items():
        cfg = _cfg(**{**over, **SINGLE[name]})
        one[name] = ttt.eval_ttt_phased(_model(cfg), _stream(), _luts(), cfg.eval, bos_id=BOS, global_seq_len=8,
                                        seed=0)
        loss, tokens, bytes_, phases = two[name]
        assert (tokens, bytes_, phases) == (one[name].tokens, one[name].bytes, one[name].phases), name
        assert np.isfinite(loss)
    assert two["frozen"][0] == pytest.approx(one["frozen"].val_loss, abs=1e-12)
    # the global phases on 2 ranks (gradients averaged) move the weights as one process does with the same global
    # batch, except that a rank's packed row is 2 sequences long, not 4, so a document crossing the middle is cut
    # there (as in the record): measured 1.8e-5 here, against the phases' own effect of 8e-4
    assert two["frozen_phased"][0] == pytest.approx(one["frozen_phased"].val_loss, abs=1e-4)
    assert abs(two["frozen_phased"][0] - two["frozen"][0]) > 5e-4  # the phases did change the weights
