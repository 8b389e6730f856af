"""The masked additive K-way tokenizer: shapes, the training-only mask, the ablation kind and the RMS scale."""

from __future__ import annotations

import pytest
import torch

from engine.model.tokenizer import ContinuousTokenizer, KWayEncoder, TokenizerConfig, bernoulli_mask


def small(**kw) -> TokenizerConfig:
    return TokenizerConfig(**{"in_dim": 8, "out_dim": 12, **kw})


def test_output_shape_and_separate_encoders():
    torch.manual_seed(0)
    tok = ContinuousTokenizer(small(k=3)).eval()
    q = torch.randn(5, 8)
    assert tok.encode_items(q).shape == (5, 3, 12)
    assert tok.encode_users(q).shape == (5, 3, 12)
    assert not torch.allclose(tok.encode_items(q), tok.encode_users(q))


def test_eval_is_deterministic():
    torch.manual_seed(0)
    enc = KWayEncoder(small(dropout=0.5, mask_ratio=0.5)).eval()
    q = torch.randn(4, 8)
    assert torch.equal(enc(q), enc(q))


def test_mask_count_pinned_and_used_in_training_only():
    g = torch.Generator().manual_seed(0)
    masked = bernoulli_mask(torch.ones(10, 64), 0.5, g)
    assert int((masked == 0).sum()) == 324  # of 640 entries, ~half
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    enc = KWayEncoder(small(dropout=0.0, mask_ratio=0.5))
    q = torch.randn(6, 8)
    train_out = enc.train()(q, torch.Generator().manual_seed(1))
    manual = enc.eval()(bernoulli_mask(q, 0.5, torch.Generator().manual_seed(1)))
    assert torch.allclose(train_out, manual)
    assert not torch.allclose(train_out, enc.eval()(q))


def test_mask_ratio_zero_in_training_equals_eval():
    torch.manual_seed(0)
    enc = KWayEncoder(small(dropout=0.0, mask_ratio=0.0))
    q = torch.randn(4, 8)
    assert torch.equal(enc.train()(q), enc.eval()(q))


def test_linear_kind():
    torch.manual_seed(0)
    enc = KWayEncoder(small(kind="linear", out_norm=False)).eval()
    q = torch.randn(3, 8)
    out = enc(q)
    assert out.shape == (3, 2, 12)
    assert all(len(way.blocks) == 0 for way in enc.ways)
    assert torch.allclose(out[:, 0], enc.ways[0].proj(q))
    with pytest.raises(ValueError):
        TokenizerConfig(out_dim=4, kind="mlp")


def test_out_norm_rms_equals_out_scale():
    torch.manual_seed(0)
    enc = KWayEncoder(small(out_scale=0.03)).eval()
    out = enc(torch.randn(7, 8))
    rms = out.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full((7, 2), 0.03), rtol=1e-5)
    raw = KWayEncoder(small(out_norm=False)).eval()(torch.randn(7, 8))
    assert not torch.allclose(raw.pow(2).mean(-1).sqrt(), torch.ones(7, 2))
