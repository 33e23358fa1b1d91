"""Optimizers and learning-rate schedules, built from the job's `optim:` section.

Fused kernels where the device has them: one launch per step updates every
parameter, instead of one per tensor (the difference is measurable on the
tutorial's small model, where the update is a sizeable part of a step).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def make_optimizer(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer, fused where the device has a fused kernel (one launch per step, not per tensor)."""
    params = model.parameters()
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fast)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fast)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fast)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)


def make_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate schedule per optimizer step, with optional linear warm-up."""
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if cfg.scheduler == "step":
            return cfg.gamma ** (step // (cfg.step_size_epochs * steps_per_epoch))
        return 1.0

    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=max(total_steps, 2))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
