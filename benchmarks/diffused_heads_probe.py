"""Where a trained Diffused Heads loses the frame: one held-out frame denoised under true conditions.

    python benchmarks/diffused_heads_probe.py --model diffused-heads-demo --data runs/dh-demo/data \\
        [--clip 0] [--frame 30] [--autoregressive 6] [--seeds 4] [--out DIR]

A model with a low training loss can still sample noise: generation chains many network calls and
feeds each frame back as a motion frame. This probe takes the ``--clip``-th held-out clip of a
``talkinghead data synth`` set, its frame ``--frame`` as the target, the clip's first frame as the
identity frame, the two true frames before the target as motion frames and the clip's own speech,
and reports PSNR (dB, [-1, 1] images) against the true target, the mean over ``--seeds`` noise
draws (a single draw varies by several dB), of:

* ``one_step``: the x0 estimate of a single network call on the target noised to level t (what the
  training loss sees);
* ``ddim_from``: DDIM (every 50th timestep) started from the target noised to level t0: 999 is
  sampling from scratch; a lower t0 keeps some of the true frame;
* ``sampler``: each sampler from pure noise (``ancestral`` is the official one);
* ``autoregressive``: the first ``--autoregressive`` frames generated as the pipeline does (motion
  frames = the frames generated before), 20 ancestral steps;
* ``copy_previous``: the previous true frame as the answer (what a model that copies motion frames
  scores).

Prints the rows and writes ``<out>/diffused_heads_probe.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import cv2
import numpy as np
import passive_wait  # noqa: F401  (before torch: idle OpenMP threads sleep, as under the CLI)
import torch
from synth_scoring import add_scoring_flags, clip_reader, open_model_and_data, write_result
from torch import Tensor

from talkinghead.data.layout import ClipReader
from talkinghead.diffused_heads.sampling import (
    OfficialNoise,
    audio_window,
    frame_sampler,
    generate_frames,
)
from talkinghead.diffused_heads.training_data import to_model_range
from talkinghead.diffusion.prediction import eps_denoiser
from talkinghead.diffusion.respacing import training_schedule

LEVELS = (50, 300, 600, 900, 999)
SAMPLERS = (("ancestral", 20), ("ancestral", 100), ("ddim", 20), ("dpmpp-2m", 20))


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) of two images in [-1, 1] (peak-to-peak 2)."""
    return float(10 * torch.log10(4 / ((a.clamp(-1, 1) - b) ** 2).mean()))


@torch.no_grad()
def clip_inputs(pipe: Any, reader: ClipReader) -> tuple[Tensor, Tensor]:
    """``reader``'s clip for ``pipe``: (F, 3, S, S) frames in [-1, 1] at the model's resolution and
    the (1, F, C) audio embeddings of its speech."""
    size = pipe.config.resolution
    frames = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in reader.frames]
    video = to_model_range(np.stack(frames)).to(pipe.device)
    return video, pipe.audio_embeddings(str(reader.dir / "audio.wav"))


@torch.no_grad()
def probe(
    pipe: Any, video: Tensor, emb: Tensor, frame: int, steps: int, seed: int
) -> dict[str, Any]:
    """The rows of the module doc for target ``frame`` of a clip (``clip_inputs``), one noise draw."""
    unet, diffusion = pipe.unet, pipe.config.diffusion
    target, identity = video[frame : frame + 1], video[:1]
    n = unet.cfg.n_motion_frames
    motion = torch.cat(list(video[frame - n : frame, None]), dim=1)
    window = emb[:, audio_window(frame, emb.shape[1], unet.cfg.n_audio_motion_embs)]

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        return unet(x, t, identity, motion, window)

    alpha_bar = training_schedule(diffusion.num_train_timesteps, diffusion.max_beta).alpha_bar
    eps_net = (
        denoise
        if diffusion.prediction == "eps"
        else eps_denoiser(denoise, alpha_bar.to(target.device))
    )
    gen = torch.Generator().manual_seed(seed)

    def noised(t: int) -> Tensor:
        eps = torch.randn(target.shape, generator=gen).to(target)
        a = alpha_bar[t].float()
        return a.sqrt() * target + (1 - a).sqrt() * eps

    def x0_of(x: Tensor, t: int) -> Tensor:
        a = alpha_bar[t].float()
        eps = eps_net(x, torch.tensor([t], device=x.device))[:, : x.shape[1]]
        return ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1), eps

    def ddim_from(t0: int) -> Tensor:
        times = sorted({*range(t0, -1, -50), 0}, reverse=True)
        x = noised(t0)
        for t, nxt in zip(times, [*times[1:], None]):
            x0, eps = x0_of(x, t)
            if nxt is not None:
                a = alpha_bar[nxt].float()
                x = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return x0

    rows: dict[str, Any] = {
        "copy_previous": psnr(video[frame - 1 : frame], target),
        "one_step": {t: psnr(x0_of(noised(t), t)[0], target) for t in LEVELS},
        "ddim_from": {t: psnr(ddim_from(t), target) for t in LEVELS},
        "sampler": {},
    }
    for name, num in SAMPLERS:
        sampler = frame_sampler(name, num, diffusion, pipe.device)
        noise = OfficialNoise(seed, 1, tuple(target.shape))
        x_T = noise.initial(0).to(target)
        out = sampler(denoise, x_T, lambda shape, noise=noise: noise.step(shape).to(target), None)
        rows["sampler"][f"{name}:{num}"] = psnr(out, target)
    sampler = frame_sampler("ancestral", 20, diffusion, pipe.device)
    noise = OfficialNoise(seed, steps, tuple(target.shape))
    frames = generate_frames(unet, identity, emb[:, :steps], sampler, noise)
    rows["autoregressive"] = [psnr(f, video[i : i + 1]) for i, f in enumerate(frames)]
    return rows


def mean_rows(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of ``probe``'s rows over several draws."""
    first = draws[0]
    if isinstance(first, dict):
        return {k: mean_rows([d[k] for d in draws]) for k in first}
    if isinstance(first, list):
        return [mean_rows([d[i] for d in draws]) for i in range(len(first))]
    return sum(draws) / len(draws)


def table(rows: dict[str, Any]) -> str:
    lines = [f"copy the previous true frame: {rows['copy_previous']:.2f} dB"]
    for key in ("one_step", "ddim_from"):
        lines.append(f"{key:>10} " + "  ".join(f"t={t}: {v:.2f}" for t, v in rows[key].items()))
    lines.append("   sampler " + "  ".join(f"{k}: {v:.2f}" for k, v in rows["sampler"].items()))
    lines.append("autoregr. " + "  ".join(f"{v:.2f}" for v in rows["autoregressive"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scoring_flags(parser, "a `talkinghead data synth` set")
    parser.add_argument("--clip", type=int, default=0, help="index among the held-out clips")
    parser.add_argument("--frame", type=int, default=30, help="target frame (>= 2)")
    parser.add_argument("--autoregressive", type=int, default=6, help="frames generated in a row")
    parser.add_argument("--seeds", type=int, default=4, help="noise draws averaged")
    args = parser.parse_args(argv)
    pipe, manifest = open_model_and_data(args)
    entry = manifest.split("test")[args.clip]
    reader = clip_reader(args, manifest, entry.id)
    if not 2 <= args.frame < entry.num_frames:
        parser.error(f"--frame must be in [2, {entry.num_frames}) for clip {entry.id}")
    video, emb = clip_inputs(pipe, reader)
    draws = [probe(pipe, video, emb, args.frame, args.autoregressive, s) for s in range(args.seeds)]
    rows = mean_rows(draws)
    print(table(rows))
    write_result(
        args, argv, "diffused_heads_probe.json", {"clip": entry.id, "frame": args.frame, **rows}
    )


if __name__ == "__main__":
    main()
