"""The Diffused Heads training objective on tiny synthetic data."""

from __future__ import annotations

import math

import torch

from talkinghead.diffused_heads.objective import DiffusedHeadsObjective, lip_loss
from talkinghead.diffusion.respacing import training_schedule
from talkinghead.diffusion.vlb import vlb_loss

from .tiny import random_tiny_unet


def synthetic_batch(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Blurry blobs with a 'mouth' rectangle whose height follows the first audio feature."""
    g = torch.Generator().manual_seed(seed)
    s = 32
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    face = torch.exp(-((xx - 16) ** 2 + (yy - 14) ** 2) / 60.0) * 1.6 - 0.8
    audio = torch.randn(b, 5, 8, generator=g)
    opening = (audio[:, 2, 0].sigmoid() * 6).round().long() + 1
    target = face.expand(b, 3, s, s).clone()
    mouth = torch.zeros(b, 20, 2)
    for i, o in enumerate(opening.tolist()):
        target[i, :, 22 : 22 + o, 12:20] = -1.0
        mouth[i, :, 0] = torch.linspace(12, 19, 20)
        mouth[i, :, 1] = torch.linspace(22, 22 + o, 20)
    identity = face.expand(b, 3, s, s).clone()
    return {
        "target": target,
        "identity": identity,
        "motion": torch.cat([identity, identity], 1),
        "audio": audio,
        "mouth": mouth,
        "identity_mouth": mouth.clone(),
    }


def test_lip_loss_box():
    eps, pred = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    pred[0, :, 10:20, 10:20] = 1.0  # box: columns [8-5, 13+5), rows [9-5, 12+5)
    landmarks = torch.tensor([[[8.2, 9.0], [12.6, 11.5]]])
    crop = pred[0, :, 4:17, 3:18]
    assert math.isclose(
        lip_loss(eps, pred, landmarks).item(), (crop**2).mean().item(), rel_tol=1e-6
    )


def test_vlb_is_zero_for_the_true_posterior():
    """With eps from the true x0 and v = -1 (variance = β̃), p equals q and the KL vanishes (t > 0)."""
    sched = training_schedule()
    x0 = torch.rand(2, 3, 8, 8) * 1.6 - 0.8
    eps = torch.randn(2, 3, 8, 8)
    t = torch.tensor([10, 500])
    a = sched.alpha_bar[t].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    out = torch.cat([eps, -torch.ones_like(eps)], dim=1)
    assert vlb_loss(sched, x0, x_t, t, out).abs().max() < 1e-3


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    unet = random_tiny_unet(0).train()
    objective = DiffusedHeadsObjective(unet)
    batch = synthetic_batch()
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)

    def evaluate() -> float:
        g = torch.Generator().manual_seed(123)  # the same t and eps every time
        with torch.no_grad():
            return sum(objective(batch, g)[0].item() for _ in range(4)) / 4

    before = evaluate()
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        loss, metrics = objective(batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert set(metrics) == {"simple", "vlb", "lip"} and torch.isfinite(loss)
    assert evaluate() < 0.8 * before


def test_faithful_lip_reads_the_identity_landmarks():
    unet = random_tiny_unet(0)
    batch = synthetic_batch()
    batch["identity_mouth"][:, :, 1] -= 10
    losses = []
    for faithful in (False, True):
        objective = DiffusedHeadsObjective(unet, vlb_weight=0.0, faithful_lip=faithful)
        losses.append(objective(batch, torch.Generator().manual_seed(1))[1]["lip"])
    assert losses[0] != losses[1]
