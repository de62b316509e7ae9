"""The GPT of the official baseline, with the seed-PR options as switches.

With ``ModelConfig()`` defaults the module tree, parameter names, shapes, init RNG order and forward
pass equal the official ``train_gpt.py`` GPT: an official ``final_model.pt`` loads with strict=True.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.core.config import ModelConfig
from pgolf.core.model.embed import BigramHash, InputSmearGate, SmearGate
from pgolf.core.model.layers import CastedLinear, CausalSelfAttention, RMSNorm
from pgolf.core.model.mlp import build_mlp
from pgolf.core.model.softcap_ce import softcap_cross_entropy


def loop_schedule(cfg: ModelConfig) -> tuple[list[int], list[int]]:
    """(encoder, decoder) block indices with looping on: blocks before the loop, the loop segment
    1 + loop_count times, the rest; split in half (the encoder the shorter). Without a loop: the U-Net halves."""
    n_enc = cfg.num_layers // 2 if cfg.unet_skips else 0
    if not cfg.loop_layers:
        return list(range(n_enc)), list(range(n_enc, cfg.num_layers))
    first, last = cfg.loop_layers[0], cfg.loop_layers[-1]
    order = list(range(first)) + list(cfg.loop_layers) * (cfg.loop_count + 1) + list(range(last + 1, cfg.num_layers))
    half = len(order) // 2
    return order[:half], order[half:]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, train_seq_len: int, ntk: bool, layer_idx: int = 0):
        super().__init__()
        dim = cfg.model_dim
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(dim, cfg.num_heads, cfg.num_kv_heads, cfg.rope_base, cfg.qk_gain_init,
                                        train_seq_len, ntk, rope_dims=cfg.rope_dims,
                                        xsa=layer_idx >= cfg.num_layers - cfg.xsa_last_n,
                                        gate_window=cfg.gate_window if cfg.sparse_attn_gate else 0,
                                        gate_scale=cfg.sparse_attn_gate_scale, doc_mask=cfg.doc_mask)
        # 1/sqrt(depth) on the normed sublayer inputs (model.ln_scale_by_depth); a looped block keeps its own
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale_by_depth else 1.0
        self.mlp = build_mlp(cfg)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())  # (2, D)

    def forward(self, x: Tensor, x0: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
        mix = self.resid_mix.to(dtype=x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        if self.ln_scale != 1.0:
            x = x + self.attn_scale.to(dtype=x.dtype)[None, None, :] * self.attn(self.attn_norm(x) * self.ln_scale,
                                                                                  cu_seqlens, max_seqlen)
            return x + self.mlp_scale.to(dtype=x.dtype)[None, None, :] * self.mlp(self.mlp_norm(x) * self.ln_scale)
        x = x + self.attn_scale.to(dtype=x.dtype)[None, None, :] * self.attn(self.attn_norm(x), cu_seqlens, max_seqlen)
        x = x + self.mlp_scale.to(dtype=x.dtype)[None, None, :] * self.mlp(self.mlp_norm(x))
        return x

    def parallel(self, lane0: Tensor, lane1: Tensor, x0: Tensor, resid: Tensor, post: Tensor,
                 cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> tuple[Tensor, Tensor]:
        """Two-lane block (model.parallel_start_layer): attention reads lane 0 (mixed with x0), the MLP lane 1;
        lane k <- resid[k] * lane k + post[0, k] * attn_out + post[1, k] * mlp_out."""
        mix = self.resid_mix.to(dtype=lane0.dtype)
        attn_in = mix[0][None, None, :] * lane0 + mix[1][None, None, :] * x0
        attn_out = self.attn(self.attn_norm(attn_in) * self.ln_scale, cu_seqlens, max_seqlen)
        attn_out = self.attn_scale.to(dtype=lane0.dtype)[None, None, :] * attn_out
        mlp_out = self.mlp_scale.to(dtype=lane1.dtype)[None, None, :] * self.mlp(self.mlp_norm(lane1) * self.ln_scale)
        resid, post = resid.to(dtype=lane0.dtype), post.to(dtype=lane0.dtype)
        return (resid[0] * lane0 + post[0, 0] * attn_out + post[1, 0] * mlp_out,
                resid[1] * lane1 + post[0, 1] * attn_out + post[1, 1] * mlp_out)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, train_seq_len: int = 1024, ntk: bool = True):
        super().__init__()
        self.cfg = cfg
        self.logit_softcap = cfg.logit_softcap
        # Creation order matters: it fixes the RNG draws of the default init (official order).
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        if cfg.module_order == "records":  # their same-seed init, and bigram.proj first in the init loop
            self._build_options()
        self.num_encoder_layers = cfg.num_layers // 2 if cfg.unet_skips else 0
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        # Depth recurrence: the block order when looping is on; off, the plain order. Flipped only by
        # pgolf.core.loop.LoopController (explicit state, logged and checkpointed).
        self.encoder_indices, self.decoder_indices = loop_schedule(cfg)
        self.looping_active: bool = False
        if cfg.unet_skips:
            n_skip = min(len(self.encoder_indices), len(self.decoder_indices))
            self.skip_weights = nn.Parameter(torch.ones(n_skip, cfg.model_dim, dtype=torch.float32))
            if cfg.skip_gates:  # zero logits: sigmoid 0.5, an even mix of skip and stream at init
                self.skip_gates = nn.Parameter(torch.zeros(n_skip, cfg.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(cfg, train_seq_len, ntk, i) for i in range(cfg.num_layers)])
        self.final_norm = RMSNorm()
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, zero_init=True)
        if cfg.parallel_start_layer:  # constants, no RNG draw: the other tensors' same-seed init is unchanged
            self.parallel_post_lambdas = nn.Parameter(torch.ones(cfg.num_layers, 2, 2, dtype=torch.float32))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((cfg.num_layers, 2), 1.1, dtype=torch.float32))
        self._official_init()
        # By default options beyond the baseline are created after the official init so they never shift it.
        if cfg.module_order == "official":
            self._build_options()
        self._option_init()

    def _build_options(self) -> None:
        cfg = self.cfg
        smear: nn.Module | None = None
        if cfg.smear_gate == "input":
            smear = InputSmearGate(cfg.gate_window, cfg.bos_id)
        elif cfg.smear_gate != "off":
            smear = SmearGate(cfg.model_dim, cfg.smear_gate, cfg.smear_init, cfg.bos_id, cfg.smear_gated)
        bigram = (BigramHash(cfg.bigram_buckets, cfg.bigram_dim, cfg.model_dim, cfg.bigram_scale_init, cfg.bos_id,
                             cfg.bigram_init) if cfg.bigram_buckets else None)
        if cfg.module_order == "records":  # bigram registered first: same parameter order (and grad-clip sum)
            self.bigram, self.smear = bigram, smear
        else:
            self.smear, self.bigram = smear, bigram

    # -- init -------------------------------------------------------------------------------
    def _official_init(self) -> None:
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for m in self.modules():
            if isinstance(m, CastedLinear) and m.zero_init:
                nn.init.zeros_(m.weight)

    @torch.no_grad()
    def _option_init(self) -> None:
        cfg = self.cfg
        if cfg.init == "orthogonal":
            for name, m in self.named_modules():  # module order = RNG order
                if not isinstance(m, CastedLinear):
                    continue
                if name == "bigram.proj":
                    if cfg.bigram_init == "ortho_proj":  # the records' loop reaches it: not flagged zero-init there
                        nn.init.orthogonal_(m.weight, gain=1.0 / math.sqrt(2 * cfg.num_layers))
                elif m.zero_init:
                    if cfg.proj_init_gain > 0:
                        nn.init.orthogonal_(m.weight, gain=cfg.proj_init_gain / math.sqrt(2 * cfg.num_layers))
                elif min(m.weight.shape) >= cfg.ortho_min_dim:
                    nn.init.orthogonal_(m.weight, gain=1.0)
        if cfg.resid_mix_init == "phase":
            L = cfg.num_layers
            for i, block in enumerate(self.blocks):
                # fp32 sigmoid and fp32 1 - p, as the records compute it (a float64 formula is 1 ulp off)
                p = torch.sigmoid(torch.tensor(3.0 * (i / max(L - 1, 1) - 0.5)))
                block.resid_mix[0].fill_(p)
                block.resid_mix[1].fill_(1 - p)
        if cfg.embed_init == "overtone":
            w = torch.randn_like(self.tok_emb.weight) * cfg.tied_embed_init_std
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            k = torch.arange(1, s.numel() + 1, dtype=s.dtype)
            self.tok_emb.weight.copy_(u @ torch.diag(s[0] * k.pow(-0.5)) @ vh)

    # -- forward ----------------------------------------------------------------------------
    def hidden(self, input_ids: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
        """Final hidden states; ``cu_seqlens``/``max_seqlen``: document-masked attention over one packed row
        (:func:`pgolf.core.model.docmask.build_cu_seqlens`), with ``model.doc_mask`` on."""
        if cu_seqlens is not None and not self.cfg.doc_mask:
            raise ValueError("cu_seqlens given to a model without model.doc_mask")
        x = self.tok_emb(input_ids)  # (B, T, D)
        if self.bigram is not None:
            x = x + self.bigram(input_ids).to(x.dtype)
        if self.smear is not None and self.cfg.smear_placement == "pre_norm":
            x = self.smear(x, input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        if self.smear is not None and self.cfg.smear_placement == "post_norm":
            x = self.smear(x, input_ids)
        x0 = x
        skips: list[Tensor] = []
        if self.looping_active:
            enc, dec = self.encoder_indices, self.decoder_indices
        else:
            enc = range(self.num_encoder_layers)
            dec = range(self.num_encoder_layers, self.num_encoder_layers + self.num_decoder_layers)
        for i in enc:
            x = self.blocks[i](x, x0, cu_seqlens, max_seqlen)
            skips.append(x)
        psl = self.cfg.parallel_start_layer
        lanes: tuple[Tensor, Tensor] | None = None
        for j, i in enumerate(dec):
            if psl and i >= psl:  # two lanes from here; both start as the stream, the skips join lane 0
                lane0, lane1 = lanes or (x, x)
                if skips:
                    lane0 = self._add_skip(lane0, skips.pop(), j)
                lanes = self.blocks[i].parallel(lane0, lane1, x0, self.parallel_resid_lambdas[i],
                                                self.parallel_post_lambdas[i], cu_seqlens, max_seqlen)
                continue
            if skips:
                x = self._add_skip(x, skips.pop(), j)
            x = self.blocks[i](x, x0, cu_seqlens, max_seqlen)
        if lanes is not None:
            final = self.cfg.parallel_final_lane
            x = lanes[0] if final == "attn" else lanes[1] if final == "mlp" else 0.5 * (lanes[0] + lanes[1])
        return self.final_norm(x)

    def _add_skip(self, x: Tensor, skip: Tensor, j: int) -> Tensor:
        skip = self.skip_weights[j].to(dtype=x.dtype)[None, None, :] * skip
        if self.cfg.skip_gates:
            return torch.lerp(skip, x, torch.sigmoid(self.skip_gates[j].to(dtype=x.dtype))[None, None, :])
        return x + skip

    def head(self, h: Tensor) -> Tensor:
        """The logits before the softcap: the tied embedding's or the head's projection."""
        return F.linear(h, self.tok_emb.weight) if self.lm_head is None else self.lm_head(h)

    def logits(self, h: Tensor) -> Tensor:
        z = self.head(h)
        return self.logit_softcap * torch.tanh(z / self.logit_softcap)

    def forward(self, input_ids: Tensor, target_ids: Tensor | None = None, reduction: str = "mean",
                cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
        """Mean cross-entropy (default), per-token losses (reduction="none", flat), or logits. ``cu_seqlens``: the
        batch is one packed row of documents (int32 starts, the record's convention), attended one by one."""
        h = self.hidden(input_ids, cu_seqlens, max_seqlen)
        if target_ids is None:
            return self.logits(h)
        return softcap_cross_entropy(self.head(h.reshape(-1, h.size(-1))), target_ids.reshape(-1), self.logit_softcap,
                                     reduction)
