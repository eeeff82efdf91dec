"""One benchmark measurement: build one implementation at one preset, time one stage, report JSON.

Run by ``generate.py`` in a fresh subprocess per configuration (``python workloads.py '<json>'``), so
the peak memory it reports belongs to that configuration alone. Stages (dawn_spec.md §1.4, §6):

* ``ddim``: A2V-FDM DDIM sampling of the whole clip (``--steps`` UNet evaluations) from the source
  feature, face-location embedding and per-frame condition (computed before the clock starts);
* ``decode``: LFG decoding of a given latent flow video to frames;
* ``e2e``: source encoding + face box + DDIM + decoding (official ``sample_one_video``).

Implementations: ``ours`` (local attention, source convolved once, batched decode with the portrait
encoded once, streamed), ``ours-faithful`` (the same networks in the official O(F^2) full-attention
mode, decoding one frame at a time), ``official`` (the DAWN code imported from ``--official``, see
``official.py``). All three get identical weights, inputs and injected noise (seeded), and run the
sampler with the official update rule, so outputs can be compared.

With ``compile`` the UNet forward goes through ``torch.compile`` exactly as in the pipeline
(``pipelines/compile.py``) and the stage runs twice: the first call (compilation included) is reported
as ``first_call_s`` and ``compile_s`` (first minus steady), the second is the row's ``wall_s``.

Memory: peak RSS of the process (``ru_maxrss``: imports + weights + the call) and the peak RSS *during
the call* above the RSS just before it (Linux ``clear_refs`` resets the high-water mark); on CUDA the
peak allocated bytes of the call.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from talkinghead.dawn.configs import PRESETS, FaceLocConfig, FlowAEConfig, UNet3DConfig
from talkinghead.dawn.convert import unet_state_dict
from talkinghead.dawn.models import flow_autoencoder, unet3d
from talkinghead.dawn.models.face_location import FaceLocationEncoder, bbox_mask
from talkinghead.diffusion.samplers import ddim_sample
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.pipelines.compile import CompiledDenoiser

logger = logging.getLogger(__name__)

REDUCED = "reduced-golden"
PRESET_NAMES = (REDUCED, "dawn-128", "dawn-256", "tiny")
_RANDN = torch.randn  # bound now: the official harness patches torch.randn while sampling
IMPLS = ("ours", "ours-faithful", "official")
STAGES = ("ddim", "decode", "e2e")


@dataclass(frozen=True)
class Spec:
    """One measurement (the JSON handed to the worker)."""

    impl: str  # one of IMPLS
    preset: str  # one of PRESET_NAMES
    stage: str  # one of STAGES
    frames: int  # F, clip length
    steps: int  # DDIM steps (UNet evaluations)
    threads: int  # torch intra-op threads
    device: str  # "cpu" or "cuda"
    seed: int  # weights, inputs and noise
    decode_batch: int  # frames per LFG call for "ours"
    golden_dir: str  # ../shared/golden (reduced-golden weights)
    official: str | None  # checkout of the official code (impl "official")
    save: str | None  # write the stage output here (safetensors) for the equality check
    autocast: str  # "none" | "bf16" | "fp16" (ours only)
    compile: bool  # torch.compile the UNet forward as the pipeline does (ours only)


# -- configs, weights and inputs ---------------------------------------------------------------


def configs(preset: str, golden_dir: Path) -> tuple[int, UNet3DConfig, FlowAEConfig]:
    """(resolution, UNet config, LFG config) of a preset."""
    if preset == REDUCED:
        unet_sd = unet_state_dict(load_file(str(golden_dir / "a2v128_reduced.safetensors")))
        lfg_sd = load_file(str(golden_dir / "lfg128_reduced.safetensors"))
        return (
            128,
            unet3d.config_from_state_dict(unet_sd),
            flow_autoencoder.config_from_state_dict(lfg_sd),
        )
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} must be one of {PRESET_NAMES}")
    cfg = PRESETS[preset]
    return cfg.resolution, cfg.unet, cfg.flow_ae


def state_dicts(preset: str, golden_dir: Path, seed: int) -> dict[str, dict[str, Tensor]]:
    """Weights shared by every implementation: golden for reduced-golden, else seeded random."""
    _, ucfg, fcfg = configs(preset, golden_dir)
    if preset == REDUCED:
        return {
            "unet": unet_state_dict(load_file(str(golden_dir / "a2v128_reduced.safetensors"))),
            "lfg": load_file(str(golden_dir / "lfg128_reduced.safetensors")),
            "face_loc": load_file(str(golden_dir / "a2v128_face_loc_emb.safetensors")),
        }
    torch.manual_seed(seed)  # a benchmark process, not the library: seeding globally is fine here
    return {
        "unet": unet3d.UNet3D(ucfg).state_dict(),
        "lfg": flow_autoencoder.FlowAutoencoder(fcfg).state_dict(),
        "face_loc": FaceLocationEncoder(
            FaceLocConfig(out_channels=ucfg.face_loc_channels)
        ).state_dict(),
    }


@dataclass
class Inputs:
    """Deterministic inputs of one clip (official layouts)."""

    image: Tensor  # (1, 3, S, S) in [0, 1]
    audio: Tensor  # (1, F, A)
    pose: Tensor  # (1, 6, F) raw pose
    eye: Tensor  # (1, 2, F)
    init_pose: Tensor  # (1, 7)
    init_eye: Tensor  # (1, 2)
    bbox: Tensor  # (1, 6, 1) [x_min, x_max, y_min, y_max, H, W]
    flow: Tensor  # (F, h, w, 2) latent grid for the decode stage
    occlusion: Tensor  # (F, 1, h, w) in [0, 1]

    def cond(self) -> Tensor:
        """(1, F, A + 6 + 2) = [audio | pose - init | eye - init] (official ``ref_text``)."""
        pose = self.pose.transpose(1, 2) - self.init_pose[:, None, :6]
        eye = self.eye.transpose(1, 2) - self.init_eye[:, None]
        return torch.cat([self.audio, pose, eye], dim=-1)


def make_inputs(res: int, ucfg: UNet3DConfig, frames: int, seed: int) -> Inputs:
    g = torch.Generator().manual_seed(seed + 1)
    h = res // 4
    ident = torch.stack(
        torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, h), indexing="xy"), -1
    )
    return Inputs(
        image=torch.rand(1, 3, res, res, generator=g),
        audio=torch.randn(1, frames, ucfg.audio_dim, generator=g),
        pose=torch.randn(1, 6, frames, generator=g) * 2,
        eye=torch.rand(1, 2, frames, generator=g) * 0.3,
        init_pose=torch.randn(1, 7, generator=g),
        init_eye=torch.rand(1, 2, generator=g) * 0.3,
        bbox=torch.tensor([[[0.25 * res], [0.75 * res], [0.2 * res], [0.8 * res], [res], [res]]]),
        flow=(ident + 0.05 * torch.randn(frames, h, h, 2, generator=g)).clamp(-1, 1),
        occlusion=torch.rand(frames, 1, h, h, generator=g),
    )


def noise_draws(
    shape: tuple[int, ...], count: int, seed: int, device: torch.device
) -> Iterator[Tensor]:
    """The sampler's draws (x_T, then one per noisy step), made lazily from one seeded stream."""
    g = torch.Generator().manual_seed(seed + 2)
    for _ in range(count):
        yield _RANDN(shape, generator=g).to(device)


# -- memory and timing ------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak(device: torch.device) -> float:
    """Reset the high-water marks; returns the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return _status_kib("VmRSS") / 1024


def measure(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    base = reset_peak(device)
    cuda_base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    out = {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu_start,  # all threads of the process, user + system
        # pages the kernel faulted in (and zeroed) for the call: fresh memory, not reused
        "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
        "rss_before_mib": base,
        "call_peak_rss_mib": _status_kib("VmHWM") / 1024 - base,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        out["cuda_call_peak_mib"] = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# -- our implementation -----------------------------------------------------------------------


def run_ours(spec: Spec, device: torch.device) -> tuple[dict[str, float], dict[str, Tensor]]:
    golden = Path(spec.golden_dir)
    res, ucfg, fcfg = configs(spec.preset, golden)
    sds = state_dicts(spec.preset, golden, spec.seed)
    faithful = spec.impl == "ours-faithful"
    unet, lfg = unet3d.UNet3D(ucfg), flow_autoencoder.FlowAutoencoder(fcfg)
    face_loc = FaceLocationEncoder(FaceLocConfig(out_channels=ucfg.face_loc_channels))
    for model, sd in ((unet, sds["unet"]), (lfg, sds["lfg"]), (face_loc, sds["face_loc"])):
        model.load_state_dict(sd, strict=True)
        model.to(device).eval().requires_grad_(False)
    del sds
    # the library's compile path (GenerateOptions.compile): forward only, eager fallback
    denoiser = CompiledDenoiser(unet) if spec.compile else unet
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.autocast)

    x = make_inputs(res, ucfg, spec.frames, spec.seed)
    x = Inputs(**{k: v.to(device) for k, v in vars(x).items()})
    cond = x.cond()
    attention = "full" if faithful else "local"
    batch = 1 if faithful else spec.decode_batch
    h = res // 4
    shape = (1, ucfg.latent_channels, spec.frames, h, h)
    keep = spec.save is not None
    result: dict[str, Tensor] = {}

    def sample(fea: Tensor, loc: Tensor) -> Tensor:
        source_emb = unet.precompute_source(torch.cat([fea, loc], dim=1))

        def denoise(z: Tensor, t: Tensor) -> Tensor:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                eps = denoiser(z, t, cond, source_emb=source_emb, attention=attention)
            return eps.float()

        return ddim_sample(
            denoise,
            shape,
            ddim_timesteps(spec.steps),
            cosine_alphas_cumprod(dtype=torch.float64),
            eta=1.0,
            faithful=True,
            noise=noise_draws(shape, spec.steps, spec.seed, device),
            device=device,
        )

    def decode(enc: flow_autoencoder.SourceEncoding, flow: Tensor, occ: Tensor) -> None:
        frames = []
        for out in lfg.decode_frames(enc, flow, occ, batch_size=batch):
            if keep:
                frames.append(out["prediction"].cpu())
        if keep:
            result["video"] = torch.cat(frames)

    def stage_ddim() -> None:
        result["latent"] = sample(fea, loc)

    def stage_decode() -> None:
        decode(lfg.encode_source(x.image), x.flow, x.occlusion)

    def stage_e2e() -> None:
        enc = lfg.encode_source(x.image)
        loc_ = face_loc(bbox_mask(x.bbox[..., 0].clone(), res, faithful=True))
        lat = sample(enc.fea, loc_)
        if keep:
            result["latent"] = lat
        decode(enc, lat[0, :2].permute(1, 2, 3, 0), ((lat[0, 2:3] + 1) / 2).permute(1, 0, 2, 3))

    with torch.no_grad():
        fea = lfg.compute_fea(x.image)
        loc = face_loc(bbox_mask(x.bbox[..., 0].clone(), res, faithful=True))
        fn = {"ddim": stage_ddim, "decode": stage_decode, "e2e": stage_e2e}[spec.stage]
        first = None
        if isinstance(denoiser, CompiledDenoiser) and spec.stage != "decode":
            # the first call compiles (inductor: minutes); the row's wall_s is the second call
            first = measure(fn, device)
        stats = measure(fn, device)
    if first is not None:
        assert isinstance(denoiser, CompiledDenoiser)
        stats["first_call_s"] = first["wall_s"]
        stats["compile_s"] = first["wall_s"] - stats["wall_s"]
        stats["first_call_peak_rss_mib"] = first["call_peak_rss_mib"]
        stats["compile_fell_back"] = denoiser.failed
    return stats, result


# -- worker entry point -----------------------------------------------------------------------


def run(spec: Spec) -> dict[str, object]:
    torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    if spec.impl == "official":
        from official import run_official  # benchmarks/official.py, beside this file

        stats, out = run_official(spec, device)
    else:
        stats, out = run_ours(spec, device)
    if spec.save and out:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in out.items()}, spec.save)
    return {**vars(spec), **stats, "torch": torch.__version__}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = Spec(**json.loads(sys.argv[1]))
    result = run(spec)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
