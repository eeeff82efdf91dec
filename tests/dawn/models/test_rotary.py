"""The one rotary embedding (PBNet and UNet temporal attention): interleaved pairs, partial rotation."""

from __future__ import annotations

import pytest
import torch

from talkinghead.dawn.models import rotary
from talkinghead.dawn.models.rotary import RotaryEmbedding, apply_rotary, rotary_frequencies


def test_rotary_interleaved_partial() -> None:
    rot = RotaryEmbedding(4)
    t = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0))
    out = rot(t)
    torch.testing.assert_close(out[..., 4:], t[..., 4:], atol=0, rtol=0)  # only 4 features rotate
    pos = torch.arange(5.0)[:, None]
    for k, f in enumerate((1.0, 0.01)):  # pair k = features (2k, 2k+1) as a complex number
        pair = (
            torch.complex(t[..., 2 * k], t[..., 2 * k + 1])
            * torch.polar(torch.ones(5, 1), pos * f)[:, 0]
        )
        torch.testing.assert_close(out[..., 2 * k], pair.real, atol=1e-6, rtol=0)
        torch.testing.assert_close(out[..., 2 * k + 1], pair.imag, atol=1e-6, rtol=0)


def test_rotary_interleaved_pairs_known_values() -> None:
    rot = RotaryEmbedding(4)
    cos, sin = rot.cos_sin(3)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 5.0]).expand(3, 5)
    out = apply_rotary(t, cos, sin)
    angle = torch.arange(3.0)
    torch.testing.assert_close(out[:, 0], angle.cos())
    torch.testing.assert_close(out[:, 1], angle.sin())
    torch.testing.assert_close(out[:, 3], (angle * 0.01).sin())  # freqs[1] = 1/10000**(2/4)
    torch.testing.assert_close(out[:, 4], torch.full((3,), 5.0))  # beyond rot dim: untouched


def test_precomputed_angles_equal_forward() -> None:
    """The UNet path (cos_sin once, apply_rotary per layer) is bit-identical to PBNet's ``rot(t)``."""
    rot = RotaryEmbedding(8)
    t = torch.randn(3, 2, 6, 8, generator=torch.Generator().manual_seed(1))
    cos, sin = rot.cos_sin(6, dtype=t.dtype)
    assert torch.equal(apply_rotary(t, cos, sin), rot(t))
    shifted = torch.arange(6) + 10
    assert torch.equal(rot(t, shifted), apply_rotary(t, *rot.cos_sin(shifted)))


def test_stateless_and_checks() -> None:
    rot = RotaryEmbedding(4)
    assert not rot.state_dict() and not list(rot.buffers())  # official freqs are recomputed
    torch.testing.assert_close(rotary_frequencies(4), torch.tensor([1.0, 0.01]))
    with pytest.raises(ValueError, match="positive even"):
        RotaryEmbedding(3)
    with pytest.raises(ValueError, match="cannot rotate 4 features"):
        rot(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="positions has shape"):
        rot(torch.zeros(5, 4), torch.arange(4))


@pytest.mark.parametrize("rotated", [16, 4])  # the UNet's whole head, PBNet's 4 of 32 features
def test_the_complex_form_equals_the_real_one(rotated: int, monkeypatch) -> None:
    # q and k of a fused projection, as the UNet's temporal attention slices them: (B, F, 3, h, d)
    qkv = torch.randn(
        6, 9, 3, 2, 16 if rotated == 16 else 32, generator=torch.Generator().manual_seed(0)
    )
    cos, sin = RotaryEmbedding(rotated).cos_sin(9)
    qk = qkv[:, :, :2]
    pairs = qk[..., :rotated].unflatten(-1, (-1, 2))
    assert rotary._complex_applies(pairs) and not rotary._complex_applies(pairs.half())
    fast = apply_rotary(qk, cos[:, None, None], sin[:, None, None], complex_form=True)
    real = apply_rotary(qk, cos[:, None, None], sin[:, None, None])
    torch.testing.assert_close(fast, real, rtol=0, atol=1e-6)
    monkeypatch.setattr(rotary, "_complex_applies", lambda pairs: False)
    assert torch.equal(
        apply_rotary(qk, cos[:, None, None], sin[:, None, None], complex_form=True), real
    )
    assert torch.equal(fast[..., rotated:], qk[..., rotated:])
