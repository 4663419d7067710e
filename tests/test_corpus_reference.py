"""The embedded corpus and the deterministic reference trainer."""

import pytest
import torch

from models import ArchConfig, corpus
from models.reference import TrainConfig, reference_model, train

SMALL = ArchConfig(n_layer=2, n_head=4, d_model=64, max_seq_len=64)


def test_corpus_is_the_standard_library_split_by_file() -> None:
    c = corpus.load()
    train_files, val_files, adapt_files = (set(c.files[s]) for s in corpus.SPLITS)
    assert train_files and val_files and adapt_files
    assert not (train_files & val_files) and not (train_files & adapt_files) and not (val_files & adapt_files)
    assert all(f.startswith("email/") for f in adapt_files)
    everything = train_files | val_files | adapt_files
    assert "os.py" in everything and "json/decoder.py" in everything
    assert not any(part in corpus.EXCLUDED_DIRS for f in everything for part in f.split("/")[:-1])
    assert 0.05 < len(val_files) / (len(train_files) + len(val_files)) < 0.2
    assert c.tokens("val").dtype == torch.uint8 and c.tokens("train").numel() > 1_000_000
    assert corpus.load() is c  # built once per process
    with pytest.raises(ValueError, match="allowed values: train, val, adapt"):
        c.tokens("test")


def test_windows_are_deterministic() -> None:
    tokens = corpus.load().tokens("val")
    a = corpus.random_windows(tokens, 4, 32, torch.Generator().manual_seed(5))
    b = corpus.random_windows(tokens, 4, 32, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][:, 1:], a[1][:, :-1])
    windows = corpus.eval_windows(tokens, 32, 10)
    assert windows.shape == (10, 33)


def test_same_seed_same_weights() -> None:
    tc = TrainConfig(steps=6, batch_size=8, seq_len=32, eval_windows=4)
    a = train(SMALL, tc, progress=False).model
    b = train(SMALL, tc, progress=False).model
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    c = train(SMALL, TrainConfig(steps=6, batch_size=8, seq_len=32, eval_windows=4, seed=1), progress=False).model
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


def test_trained_model_beats_unigram_by_a_clear_margin() -> None:
    """A 2-layer, 0.1M-parameter model after 120 steps (~5 s): at least 0.7 bits per byte below unigram (~4.47)."""
    result = train(SMALL, TrainConfig(steps=120, batch_size=32, seq_len=64, eval_windows=64), progress=False)
    assert result.unigram_bits_per_byte > 4.0
    assert result.val_bits_per_byte < result.unigram_bits_per_byte - 0.7, result.val_bits_per_byte


def test_reference_cache_reuses_and_keys_by_config(tmp_path) -> None:
    tc = TrainConfig(steps=4, batch_size=4, seq_len=32, eval_windows=4)
    first = reference_model(SMALL, tc, progress=False, directory=tmp_path)
    again = reference_model(SMALL, tc, progress=False, directory=tmp_path)
    assert not first.from_cache and again.from_cache
    assert again.val_bits_per_byte == first.val_bits_per_byte
    idx = torch.randint(0, 256, (1, 20))
    with torch.no_grad():
        assert torch.equal(first.model(idx), again.model(idx))
    other = reference_model(SMALL, TrainConfig(steps=5, batch_size=4, seq_len=32, eval_windows=4),
                            progress=False, directory=tmp_path)
    assert not other.from_cache
    assert len(list((tmp_path / "reference").iterdir())) == 2
    rope = reference_model(SMALL.replace(pos="rope", tie_weights=False), tc, progress=False, directory=tmp_path)
    assert not rope.from_cache
    reloaded = reference_model(SMALL.replace(pos="rope", tie_weights=False), tc, progress=False, directory=tmp_path)
    with torch.no_grad():
        assert torch.equal(rope.model(idx), reloaded.model(idx))


def test_learned_positions_limit_training_length() -> None:
    with pytest.raises(ValueError, match="learned position table"):
        train(SMALL, TrainConfig(steps=1, seq_len=65), progress=False)
