"""Initialisation schemes applied to a built model (GPT-2's N(0, 0.02) is `models.build`'s own)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def xavier_init_(model: nn.Module) -> nn.Module:
    """Xavier-normal Linear weights, zero biases, embeddings N(0, 1/d): Xiong et al. (2020)'s setting.
    In place; returns `model`."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=module.embedding_dim ** -0.5)
    return model


def mlp_gradient_norms(model: nn.Module, inputs: Tensor, targets: Tensor) -> list[float]:
    """L2 norm of the gradient of each block's MLP weights for one batch's next-token loss, first block first."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).backward()
    norms = []
    for block in model.blocks:
        weights = [p for name, p in block.mlp.named_parameters() if name.endswith("weight")]
        norms.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in weights)))
    return norms
