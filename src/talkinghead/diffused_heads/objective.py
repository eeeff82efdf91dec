"""The Diffused Heads training objective (diffusedheads_spec.md §4.2): L_simple + λ_vlb·L_vlb + λ_lip·L_lip.

Per item: a target frame x0, the identity frame, the two motion frames before the target (oldest first),
the 5-embedding audio window around it and the 20 mouth landmarks (68-point indices 48-67). A timestep
t ~ U{0, …, T−1} and eps ~ N(0, I) give x_t; the UNet predicts eps ‖ ν (ν interpolates the
variance), or with ``prediction="v"`` the velocity v ‖ ν (``diffusion/prediction.py``; not official).

* L_simple: mean squared error of the prediction (eps or v) over all elements.
* L_vlb: the improved-DDPM variational term with eps detached (only ν learns from it), ``diffusion.vlb``.
* L_lip: the same squared error inside the mouth box (landmark extent, floor / ceil, grown by 5 px and clamped to the
  frame), averaged over the batch. The official code reads the landmarks of the *identity* frame (a likely
  bug); we use the target frame's by default and keep ``faithful_lip=True`` for the official behaviour.
Weights: 1e-4 and 0.2 (train ``configs/config.yaml``).

Audio: either precomputed embedding windows (``audio``, as the official, whose encoder was frozen and
run once per clip) or, with an ``audio_encoder`` that trains jointly, the clip's waveform windows
(``audio_windows``, ``audio_lengths``, ``audio_index``; ``training_data.collate_frames``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet
from talkinghead.diffusion.prediction import check_prediction, eps_from_v, v_target
from talkinghead.diffusion.respacing import q_sample, training_schedule
from talkinghead.diffusion.vlb import vlb_loss

LIP_MARGIN = 5  # pixels added on every side of the mouth box


def lip_loss(target: Tensor, pred: Tensor, landmarks: Tensor, margin: int = LIP_MARGIN) -> Tensor:
    """Mean over the batch of the squared error (eps, or v) inside each item's mouth box.

    Args:
        target, pred: (B, C, H, W).
        landmarks: (B, P, 2) mouth points (x = column, y = row) in frame pixels: the 20 mouth
            landmarks, or any points with their extent such as a box's two corners.
    """
    h, w = target.shape[-2:]
    total = target.new_zeros(())
    for e, p, points in zip(target, pred, landmarks, strict=True):
        x0, y0 = (int(v) for v in points.min(0).values.floor())
        x1, y1 = (int(v) for v in points.max(0).values.ceil())
        rows = slice(max(0, y0 - margin), min(h, y1 + margin))
        cols = slice(max(0, x0 - margin), min(w, x1 + margin))
        total = total + ((e[:, rows, cols] - p[:, rows, cols]) ** 2).mean()
    return total / target.shape[0]


class DiffusedHeadsObjective(nn.Module):
    """``forward(batch, generator)`` -> (loss, metrics) for the training loop.

    batch: ``target`` (B, 3, S, S), ``identity`` (B, 3, S, S), ``motion`` (B, n·3, S, S), the audio
    (``audio`` (B, 2k+1, C) embeddings, or with ``audio_encoder`` ``audio_windows`` (B, L, window),
    ``audio_lengths`` (B,) and ``audio_index`` (B, 2k+1)), and for L_lip ``mouth`` (B, P, 2) of the
    target frame (``identity_mouth`` with ``faithful_lip``). Images in [-1, 1].
    """

    def __init__(
        self,
        unet: DiffusedHeadsUNet,
        *,
        num_train_timesteps: int = 1000,
        vlb_weight: float = 1e-4,
        lip_weight: float = 0.2,
        faithful_lip: bool = False,
        audio_encoder: SDAAudioEncoder | None = None,
        prediction: str = "eps",
    ) -> None:
        super().__init__()
        self.unet, self.audio_encoder = unet, audio_encoder
        self.schedule = training_schedule(num_train_timesteps)
        self.prediction = check_prediction(prediction)
        self.vlb_weight, self.lip_weight, self.faithful_lip = vlb_weight, lip_weight, faithful_lip

    def forward(
        self, batch: dict[str, Tensor], generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = batch["target"]
        b, dev = x0.shape[0], x0.device
        t = torch.randint(
            0, len(self.schedule), (b,), generator=generator, device=generator.device
        ).to(dev)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device).to(dev, x0.dtype)
        x_t = q_sample(self.schedule, x0, t, eps)
        out = self.unet(x_t, t, batch["identity"], batch["motion"], self.audio_condition(batch))
        pred, nu = out.float().chunk(2, dim=1)
        if self.prediction == "v":
            alpha_bar = self.schedule.alpha_bar.to(dev)[t]
            target, eps_pred = v_target(x0, eps, alpha_bar), eps_from_v(pred, x_t, alpha_bar)
        else:
            target, eps_pred = eps, pred
        simple = ((target - pred) ** 2).mean()
        loss, metrics = simple, {"simple": simple.detach()}
        if self.vlb_weight > 0:
            frozen = torch.cat([eps_pred.detach(), nu], dim=1)
            vlb = vlb_loss(self.schedule, x0, x_t, t, frozen).mean()
            loss = loss + self.vlb_weight * vlb
            metrics["vlb"] = vlb.detach()
        if self.lip_weight > 0:
            mouth = batch["identity_mouth" if self.faithful_lip else "mouth"]
            lip = lip_loss(target, pred, mouth)
            loss = loss + self.lip_weight * lip
            metrics["lip"] = lip.detach()
        return loss, metrics

    def audio_condition(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, 2k+1, C) audio embeddings around each target frame."""
        if self.audio_encoder is None:
            return batch["audio"]
        emb = self.audio_encoder.embed_windows(batch["audio_windows"], batch["audio_lengths"])
        index = batch["audio_index"][..., None].expand(-1, -1, emb.shape[-1])
        return emb.gather(1, index)
