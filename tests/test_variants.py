"""Named variants and exact parameter counts (docs/references.md figures), counted on the meta device."""

import pytest
import torch

from models import build, count_params, variants


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown variant 'gpt2-smal'") as info:
        variants.get("gpt2-smal")
    for name in variants.VARIANTS:
        assert name in str(info.value)


def test_exact_match_only() -> None:
    with pytest.raises(ValueError):
        variants.get("GPT2-SMALL")


def test_families_have_their_switches() -> None:
    for name in variants.names("gpt2"):
        c = variants.get(name)
        assert (c.pos, c.norm, c.tie_weights, c.mlp) == ("learned", "pre_ln", True, "gelu"), name
    for name in variants.names("vaswani"):
        c = variants.get(name)
        assert (c.pos, c.norm, c.tie_weights, c.mlp) == ("sinusoidal", "post_ln", True, "gelu"), name
    for name in variants.names("llama"):
        c = variants.get(name)
        assert (c.pos, c.norm, c.mlp) == ("rope", "pre_rms", "swiglu"), name
        assert c.tie_weights == (name == "llama-3.2-1b"), name  # Llama 3.2 1B ties; the others do not


def test_gpt2_small_counts_tied_and_untied() -> None:
    cfg = variants.get("gpt2-small")
    assert count_params(build(cfg, device="meta")) == 124_439_808
    assert count_params(build(cfg.replace(tie_weights=False), device="meta")) == 163_037_184
    model = build(cfg, device="meta")
    assert model.tok_emb.weight.numel() == 50257 * 768 == 38_597_376
    assert model.pos_emb.table.weight.numel() == 786_432
    assert sum(p.numel() for p in model.blocks[0].parameters()) == 7_087_872


def test_large_shapes_on_meta_device() -> None:
    assert count_params(build(variants.get("llama-3.2-1b"), device="meta")) == 1_235_814_400
    untied = variants.get("llama-3.2-1b").replace(tie_weights=False)
    assert count_params(build(untied, device="meta")) == 1_498_482_688
    assert count_params(build(variants.get("mistral-7b"), device="meta")) == 7_241_732_096
    seventy = build(variants.get("llama-2-70b"), device="meta")
    assert seventy.tok_emb.weight.numel() == 262_144_000
    assert 68e9 < count_params(seventy) < 70e9


def test_tied_head_shares_storage() -> None:
    model = build(variants.get("gpt2-tiny"))
    assert model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()
    untied = build(variants.get("gpt2-tiny").replace(tie_weights=False))
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()


def test_comment_counts_match_models() -> None:
    """Each variant line carries its parameter count as a comment; keep them true."""
    import inspect
    import re

    source = inspect.getsource(variants)
    for name, cfg in variants.VARIANTS.items():
        line = next(li for li in source.splitlines() if li.strip().startswith(f'"{name}":'))
        written = int(re.search(r"#\s*([\d,]+)", line).group(1).replace(",", ""))
        assert written == count_params(build(cfg, device="meta")), name


def test_seeded_build_is_reproducible_and_leaves_global_rng() -> None:
    cfg = variants.get("gpt2-tiny")
    state = torch.random.get_rng_state()
    a, b = build(cfg, seed=3), build(cfg, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na
    c = build(cfg, seed=4)
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)
