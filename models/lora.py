"""LoRA and rank-stabilised LoRA (rsLoRA) as a transform: Linear layers wrapped by name, outside the model.

y = W x + b + gamma * B (A x), with A (r, in) initialised kaiming-uniform (a = sqrt(5), PEFT's choice)
and B (out, r) zeros, so a fresh adapter leaves the output unchanged. gamma = alpha / r for LoRA
(Hu et al. 2021) and alpha / sqrt(r) for rsLoRA (Kalajdzievski 2023). `merge` folds gamma * B A into
W (no extra cost at inference), `unmerge` takes it out again.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_TARGETS = ("qkv", "out", "up", "down", "gate")


def lora_scaling(rank: int, alpha: float, rslora: bool) -> float:
    """gamma: alpha / r (LoRA) or alpha / sqrt(r) (rsLoRA)."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
    return alpha / math.sqrt(rank) if rslora else alpha / rank


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update gamma * B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, *, rslora: bool = False) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.rslora = rank, alpha, rslora
        self.scaling = lora_scaling(rank, alpha, rslora)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    def delta_weight(self) -> Tensor:
        """gamma * B A, shaped like the base weight (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)  # (..., out)
        if self.merged:
            return y
        return y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling  # (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (idempotent)."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (idempotent)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        kind = "rsLoRA" if self.rslora else "LoRA"
        return f"{kind}, rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:.4g}"


def apply_lora(model: nn.Module, rank: int, alpha: float, *, rslora: bool = False,
               targets: Iterable[str] | Callable[[str], bool] = DEFAULT_TARGETS, seed: int | None = 0) -> nn.Module:
    """A copy of `model` whose targeted nn.Linear layers carry adapters; every other parameter is frozen.

    `targets`: last name components (`qkv`, `up`...) or a predicate on the full module name. A `seed`
    makes the adapters' initialisation reproducible without touching the global RNG.
    """
    match = targets if callable(targets) else (lambda name, names=frozenset(targets): name.rsplit(".", 1)[-1] in names)
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    names = [n for n, m in out.named_modules() if type(m) is nn.Linear and match(n)]
    if not names:
        raise ValueError("no Linear layer matched the LoRA targets; valid last names here: "
                         + ", ".join(sorted({n.rsplit('.', 1)[-1] for n, m in out.named_modules()
                                             if type(m) is nn.Linear})))
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for name in names:
            parent, _, child = name.rpartition(".")
            holder = out.get_submodule(parent) if parent else out
            setattr(holder, child, LoRALinear(getattr(holder, child), rank, alpha, rslora=rslora))
    return out


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    """Every adapter of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight; returns `model`."""
    for layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every adapter out of its base weight again; returns `model`."""
    for layer in lora_layers(model):
        layer.unmerge()
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter matrices (A and B of every adapter)."""
    return [p for layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


def update_variance(rank: int, alpha: float, rslora: bool, dim: int = 256, *, seed: int = 0) -> float:
    """Variance of the entries of gamma * B A with A (r, dim) and B (dim, r) drawn standard normal: ~alpha^2 / r
    for LoRA, ~alpha^2 for rsLoRA (the statistical argument for rsLoRA)."""
    g = torch.Generator().manual_seed(seed + rank)
    a = torch.randn(rank, dim, generator=g, dtype=torch.float64)  # (r, dim)
    b = torch.randn(dim, rank, generator=g, dtype=torch.float64)  # (dim, r)
    return float((lora_scaling(rank, alpha, rslora) * (b @ a)).var())


def finetune(model: nn.Module, tokens: Tensor, *, steps: int, lr: float, batch_size: int, seq_len: int,
             seed: int = 0) -> tuple[list[float], list[float]]:
    """Train only the adapters of `model` on random windows of `tokens` (byte ids) with AdamW.

    Returns the loss (nats per token) and the adapters' global gradient norm at every step.
    """
    from .corpus import random_windows

    params = lora_parameters(model)
    if not params:
        raise ValueError("the model has no LoRA adapters to train (apply_lora first)")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=False)
    generator = torch.Generator().manual_seed(seed)
    device = params[0].device
    losses, grad_norms = [], []
    model.train()
    for _ in range(steps):
        x, y = random_windows(tokens, batch_size, seq_len, generator)  # 2x (B, T)
        logits = model(x.to(device))  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms.append(float(torch.sqrt(sum(p.grad.pow(2).sum() for p in params))))
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses, grad_norms
