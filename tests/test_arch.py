"""The architecture studies' building blocks: tying counts, gradient norms at initialisation, positions
past a learned table, and the norm layers against torch's."""

import pytest
import torch

from models import PositionLimitError, build, corpus, count_params, variants
from models.corpus import random_windows
from models.init import mlp_gradient_norms, xavier_init_
from models.layers import RMSNorm

from .helpers import tiny_config


@pytest.mark.parametrize(
    ("variant", "tied", "untied"),
    [("gpt2-small", 124_439_808, 163_037_184),  # docs/references.md
     ("llama-3.2-1b", 1_235_814_400, 1_498_482_688)],
)
def test_tying_parameter_table(variant: str, tied: int, untied: int) -> None:
    cfg = variants.get(variant)
    tied_model = build(cfg.replace(tie_weights=True), device="meta")
    assert count_params(tied_model) == tied
    assert count_params(build(cfg.replace(tie_weights=False), device="meta")) == untied
    assert tied_model.lm_head.weight is tied_model.tok_emb.weight
    if variant == "gpt2-small":
        assert untied - tied == 38_597_376 and round(100 * (untied - tied) / tied, 1) == 31.0


def test_tying_share_is_negligible_at_70b() -> None:
    cfg = variants.get("llama-2-70b")
    saved = count_params(build(cfg, device="meta")) - count_params(build(cfg.replace(tie_weights=True),
                                                                         device="meta"))
    assert saved == 262_144_000
    assert saved / count_params(build(cfg, device="meta")) < 0.004  # about 0.4% (docs/references.md)


@pytest.fixture(scope="module")
def batch():
    return random_windows(corpus.load().tokens("train"), 8, 128, torch.Generator().manual_seed(0))


def _grads(norm: str, depth: int, batch) -> list[float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = variants.get("gpt2-tiny").replace(norm=norm, n_layer=depth, tie_weights=False)  # the study's model
        model = xavier_init_(build(cfg, seed=0))
        return mlp_gradient_norms(model, *batch)


def test_gradient_norms_at_init_follow_xiong_et_al(batch) -> None:
    """Xavier init, fixed seed: Post-LN's MLP gradients grow toward the output; Pre-LN's shrink, and more with
    depth (measured: post last/first 1.4 and 1.2 at 6 and 12 layers, pre 0.36 and 0.21)."""
    for depth in (6, 12):
        post, pre = _grads("post_ln", depth, batch), _grads("pre_ln", depth, batch)
        assert post[-1] > post[0]  # rising with layer index
        assert pre[-1] < pre[0]
    assert _grads("pre_ln", 12, batch)[-1] < _grads("pre_ln", 6, batch)[-1]  # ~1/sqrt(L) at the last layer


def test_learned_positions_refuse_past_their_table_with_a_clear_error() -> None:
    model = build(tiny_config(pos="learned", max_seq_len=16), seed=0).eval()
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long))  # the whole table is fine
        with pytest.raises(PositionLimitError, match="learned position table holds 16"):
            model(torch.zeros(1, 32, dtype=torch.long))
    for pos in ("sinusoidal", "rope"):
        other = build(tiny_config(pos=pos, max_seq_len=16), seed=0).eval()
        with torch.no_grad():
            assert other(torch.zeros(1, 64, dtype=torch.long)).shape == (1, 64, 61)  # no limit


def test_rmsnorm_matches_torch_with_the_same_eps() -> None:
    ours = RMSNorm(96, eps=1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    theirs = torch.nn.RMSNorm(96, eps=1e-5)
    theirs.weight.data.copy_(ours.weight)
    x = torch.randn(3, 7, 96) * 4
    torch.testing.assert_close(ours(x), theirs(x))
