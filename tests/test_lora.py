"""LoRA / rsLoRA: equivalence with PEFT, scaling, merge and unmerge, and the variance argument."""

import math

import numpy as np
import pytest
import torch

from models import build, load_hf
from models.lora import (
    LoRALinear,
    apply_lora,
    lora_layers,
    lora_parameters,
    lora_scaling,
    merge_lora,
    unmerge_lora,
    update_variance,
)

from .helpers import tiny_config


def test_scaling_factors() -> None:
    assert lora_scaling(16, 16, rslora=False) == 1.0
    assert lora_scaling(16, 16, rslora=True) == 4.0  # docs/references.md: r=16, alpha=16 -> 1.0 vs 4.0
    with pytest.raises(ValueError, match="positive"):
        lora_scaling(0, 16, rslora=False)


def test_fresh_adapter_changes_nothing_and_merge_round_trips() -> None:
    model = build(tiny_config(), seed=0).eval()
    adapted = apply_lora(model, rank=4, alpha=8)
    idx = torch.randint(0, 61, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(adapted(idx), model(idx))  # B starts at zero
        for p in lora_parameters(adapted):
            if p.shape[1] == 4:  # B (out, r)
                p.normal_()
        unmerged = adapted(idx)
        assert not torch.allclose(unmerged, model(idx))
        merge_lora(adapted)
        torch.testing.assert_close(adapted(idx), unmerged, atol=1e-5, rtol=1e-5)
        unmerge_lora(adapted)
        torch.testing.assert_close(adapted(idx), unmerged, atol=1e-5, rtol=1e-5)
        for layer in lora_layers(adapted):
            assert not layer.merged
    assert all(p.requires_grad for p in lora_parameters(adapted))
    assert not any(p.requires_grad for n, p in adapted.named_parameters() if "lora_" not in n)
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched


def test_targets_by_name_and_bad_targets() -> None:
    model = build(tiny_config(n_layer=2), seed=0)
    adapted = apply_lora(model, rank=2, alpha=2, targets=("qkv",))
    assert len(lora_layers(adapted)) == 2 and all(isinstance(b.attn.qkv, LoRALinear) for b in adapted.blocks)
    with pytest.raises(ValueError, match=r"valid last names here: .*qkv"):
        apply_lora(model, rank=2, alpha=2, targets=("c_attn",))


@pytest.mark.parametrize("rslora", [False, True])
def test_equals_peft_with_the_same_adapter_weights(rslora: bool) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers builds the base model")
    peft = pytest.importorskip("peft", reason="PEFT is the reference LoRA implementation")
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=48, n_layer=2, n_head=4)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = apply_lora(load_hf(hf), rank=8, alpha=16, rslora=rslora)
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        base_logits = hf(idx).logits
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, use_rslora=rslora, fan_in_fan_out=True,
                             target_modules=["c_attn", "c_proj", "c_fc"])
    theirs = peft.get_peft_model(hf, config).eval()
    names = {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.out", "mlp.c_fc": "mlp.up", "mlp.c_proj": "mlp.down"}
    with torch.no_grad():
        for i in range(cfg.n_layer):
            for their_name, our_name in names.items():
                module = theirs.get_submodule(f"base_model.model.transformer.h.{i}.{their_name}")
                layer = ours.get_submodule(f"blocks.{i}.{our_name}")
                module.lora_B["default"].weight.normal_(0, 0.05)  # non-zero: the update matters
                assert module.scaling["default"] == pytest.approx(layer.scaling)
                layer.lora_A.copy_(module.lora_A["default"].weight)
                layer.lora_B.copy_(module.lora_B["default"].weight)
        expected = theirs(idx).logits
        assert (expected - base_logits).abs().max() > 1e-3  # the adapters change the output
        torch.testing.assert_close(ours(idx), expected, atol=2e-5, rtol=1e-4)


def test_update_variance_slopes_on_a_fixed_seed() -> None:
    ranks = [2**k for k in range(11)]  # 1 .. 1024
    for rslora, expected in ((False, -1.0), (True, 0.0)):
        var = [update_variance(r, alpha=16.0, rslora=rslora, dim=128) for r in ranks]
        slope = np.polyfit(np.log(ranks), np.log(var), 1)[0]
        assert slope == pytest.approx(expected, abs=0.05)
        assert var[-1] == pytest.approx(16.0**2 * (1 if rslora else 1 / 1024), rel=0.05)
    assert math.isclose(update_variance(4, 1.0, False, dim=64), update_variance(4, 1.0, False, dim=64))
