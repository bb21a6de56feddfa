"""The Tiny Recursive Model of aes_jax.models.trm, written again in PyTorch.

It loads the JAX params (numpy) and must give the same carry, scores and halting
logits; tests compare the two, and bench/trm_speed.py times them side by side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from aes_jax.models.trm import TRMConfig, start_states


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: TRMConfig):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.cfg = cfg
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h, cos, sin, mask):
        b, t, d = h.shape
        heads, hd = self.cfg.num_heads, self.cfg.head_dim
        q = self.q_proj(h).view(b, t, heads, hd)
        k = self.k_proj(h).view(b, t, heads, hd)
        v = self.v_proj(h).view(b, t, heads, hd)
        q = q * cos[:, :, None] + rotate_half(q) * sin[:, :, None]
        k = k * cos[:, :, None] + rotate_half(k) * sin[:, :, None]
        scores = torch.einsum("bthd,bshd->bhts", q, k).float() / math.sqrt(hd)
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        attn = torch.einsum("bhts,bshd->bthd", probs, v).reshape(b, t, d)
        h = rms_norm(h + self.dropout(self.o_proj(attn)), self.cfg.rms_norm_eps)
        mlp = self.down_proj(torch.nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))
        return rms_norm(h + self.dropout(mlp), self.cfg.rms_norm_eps)


class TorchTRM(nn.Module):
    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.embed_dim))
        self.embed_proj = (nn.Parameter(torch.zeros(cfg.embed_dim, cfg.hidden_size))
                           if cfg.embed_dim != cfg.hidden_size else None)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.score_head = nn.Linear(cfg.hidden_size, cfg.num_outputs)
        self.halt_head = nn.Linear(cfg.hidden_size, 1)
        self.register_buffer("h_init", torch.zeros(cfg.hidden_size))
        self.register_buffer("l_init", torch.zeros(cfg.hidden_size))
        dim = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(cfg.max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def initial_carry(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = input_ids.shape
        shape = (b, t, self.cfg.hidden_size)
        return self.h_init.expand(shape).clone(), self.l_init.expand(shape).clone()

    def f(self, h, injection, cos, sin, mask):
        h = h + injection
        for block in self.blocks:
            h = block(h, cos, sin, mask)
        return h

    def forward(self, carry, input_ids, attention_mask):
        c = self.cfg
        t = input_ids.shape[1]
        x = self.embed_tokens[input_ids]
        if self.embed_proj is not None:
            x = x @ self.embed_proj
        x = c.injection_scale * x
        cos, sin = self.cos[None, :t], self.sin[None, :t]
        mask = attention_mask.bool()
        z_h, z_l = carry
        with torch.no_grad():
            for _ in range(c.h_cycles - 1):
                for _ in range(c.l_cycles):
                    z_l = self.f(z_l, z_h + x, cos, sin, mask)
                z_h = self.f(z_h, z_l, cos, sin, mask)
        for _ in range(c.l_cycles):
            z_l = self.f(z_l, z_h + x, cos, sin, mask)
        z_h = self.f(z_h, z_l, cos, sin, mask)
        first = z_h[:, 0].float()
        return (z_h.detach(), z_l.detach()), self.score_head(first), self.halt_head(first)[:, 0]


def load_jax_params(model: TorchTRM, params: dict) -> TorchTRM:
    """Copies aes_jax TRM params (kernels [in, out]) into the torch module ([out, in])."""
    def t(x):
        return torch.from_numpy(np.array(x, np.float32))  # a writable copy

    with torch.no_grad():
        model.embed_tokens.copy_(t(params["embed_tokens"]))
        if model.embed_proj is not None:
            model.embed_proj.copy_(t(params["embed_proj"]))
        for i, block in enumerate(model.blocks):
            p = params["net"][f"block_{i}"]
            for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
                getattr(block, name).weight.copy_(t(p[name]["kernel"]).T)
        model.score_head.weight.copy_(t(params["score_head"]["kernel"]).T)
        model.score_head.bias.copy_(t(params["score_bias"]))
        model.halt_head.weight.copy_(t(params["halt_kernel"]).T)
        model.halt_head.bias.copy_(t(params["halt_bias"]))
        # An export carries the start states; a live params tree does not (they are
        # constants of the config).
        h_init, l_init = start_states(model.cfg)
        model.h_init.copy_(t(params.get("h_init", h_init)))
        model.l_init.copy_(t(params.get("l_init", l_init)))
    return model
