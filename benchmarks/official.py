"""Run the official DAWN code (a checkout the user passes with ``--official``) inside a benchmark worker.

Nothing from the official repository is copied here: its modules are imported at run time from the
given checkout. To make them importable on a machine without their training dependencies, this
process only (never the library) puts stubs for ``torchvision``, ``cv2``, ``matplotlib`` and
``skimage`` into ``sys.modules`` (they serve training losses, augmentation, plotting and video I/O,
none of which the measured calls touch), and on CPU turns ``Tensor.cuda`` / ``Module.cuda`` into the
identity (the official code calls ``.cuda()`` unconditionally, dawn_spec.md §7.10). It needs
``einops-exts`` and ``rotary-embedding-torch==0.3.5`` (the official pins).

The model is the class the official inference script builds (``FlowDiffusion`` of the
``…_fast_init_cond_test`` module, O(F^2) temporal attention, dawn_spec.md §0), with the UNet width
forced to the preset's ``dim`` (64 official, 16 for the reduced golden configuration, as the golden
harness did) and the weights of our models loaded into it (same key names), so both implementations
compute the same function on the same inputs and noise.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn
from workloads import Inputs, Spec, configs, make_inputs, measure, noise_draws, state_dicts

FLOW_DIFFUSION = "DM_3.modules.video_flow_diffusion_model_multiGPU_v0_crema_vgg_floss_plus_faceemb_flow_fast_init_cond_test"
NEEDS = "pip install einops-exts rotary-embedding-torch==0.3.5"


def _install_stubs() -> None:
    """Empty stand-ins for modules the official files import but the measured paths never call."""

    class Stub(types.ModuleType):
        def __getattr__(self, attr: str) -> object:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return lambda *args, **kwargs: None  # e.g. default arguments like T.ToTensor()

    def stub(name: str, **attrs: object) -> types.ModuleType:
        mod = Stub(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    transforms = stub("torchvision.transforms")
    models = stub("torchvision.models")
    stub("torchvision", transforms=transforms, models=models)
    stub("cv2")
    pyplot = stub("matplotlib.pyplot")
    stub("matplotlib", pyplot=pyplot)
    draw = stub("skimage.draw", disk=None, circle=None)
    stub("skimage", draw=draw)


def import_official(root: Path, device: torch.device) -> types.ModuleType:
    """The official FlowDiffusion module, imported from the checkout ``root``."""
    if not (root / "DM_3").is_dir() or not (root / "LFG").is_dir():
        raise ValueError(f"{root} is not a DAWN-pytorch checkout (no DM_3/ and LFG/ folders)")
    for name in ("einops_exts", "rotary_embedding_torch"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise SystemExit(f"--official needs {name}: {NEEDS} (benchmark only)") from err
    _install_stubs()
    if device.type == "cpu":
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    # the official files import each other as top-level packages (LFG.*, DM_3.*, filter_fourier)
    sys.path.insert(0, str(root))
    return importlib.import_module(FLOW_DIFFUSION)


def _lfg_yaml(root: Path, spec: Spec, work: Path) -> Path:
    """The official hdtf yaml with the preset's LFG widths (the reduced golden LFG is narrower)."""
    cfg = yaml.safe_load((root / "config" / "hdtf128.yaml").read_text())
    _, _, f = configs(spec.preset, Path(spec.golden_dir))
    mp = cfg["model_params"]
    mp["num_regions"] = f.num_regions
    mp["generator_params"].update(
        block_expansion=f.block_expansion,
        max_features=f.max_features,
        num_down_blocks=f.num_down_blocks,
        num_bottleneck_blocks=f.num_bottleneck_blocks,
    )
    mp["generator_params"]["pixelwise_flow_predictor_params"].update(
        block_expansion=f.flow_block_expansion,
        max_features=f.flow_max_features,
        num_blocks=f.flow_num_blocks,
    )
    mp["region_predictor_params"].update(
        block_expansion=f.region_block_expansion,
        max_features=f.region_max_features,
        num_blocks=f.region_num_blocks,
    )
    mp["bg_predictor_params"].update(
        block_expansion=f.bg_block_expansion,
        max_features=f.bg_max_features,
        num_blocks=f.bg_num_blocks,
    )
    path = work / "lfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def build_official(spec: Spec, device: torch.device, work: Path) -> nn.Module:
    """FlowDiffusion at the preset's widths holding the same weights as our models."""
    root = Path(spec.official or "")
    fd = import_official(root, device)
    _, ucfg, _ = configs(spec.preset, Path(spec.golden_dir))
    if spec.preset == "tiny":
        raise ValueError(
            "the official code hard-codes 275 input channels and 1032-d conditions: no tiny preset"
        )
    sds = state_dicts(spec.preset, Path(spec.golden_dir), spec.seed)
    ckpt = work / "lfg.pth"
    torch.save(
        {
            part: {k[len(part) + 1 :]: v for k, v in sds["lfg"].items() if k.startswith(part + ".")}
            for part in ("generator", "region_predictor", "bg_predictor")
        },
        ckpt,
    )

    unet_cls = fd.DynamicNfUnet3D

    def with_dim(*args: object, **kwargs: object) -> nn.Module:
        kwargs["dim"] = ucfg.dim  # FlowDiffusion hard-codes dim=64
        return unet_cls(*args, **kwargs)

    fd.DynamicNfUnet3D = with_dim
    model = fd.FlowDiffusion(
        sampling_timesteps=spec.steps,
        ddim_sampling_eta=1.0,
        pose_dim=6,
        is_train=True,
        win_width=40,
        config_pth=str(_lfg_yaml(root, spec, work)),
        pretrained_pth=str(ckpt),
    )
    missing, unexpected = model.unet.load_state_dict(sds["unet"], strict=False)
    constant = [k for k in missing if not k.endswith("rotary_emb.freqs")]
    if constant or unexpected:
        raise RuntimeError(
            f"official UNet keys differ: missing {constant[:5]}, unexpected {unexpected[:5]}"
        )
    model.face_loc_emb.load_state_dict(sds["face_loc"], strict=True)
    model.update_num_frames(spec.frames)
    return model.to(device).eval()


class _InjectedNoise:
    """Replace torch.randn / randn_like by the shared seeded draws while the sampler runs."""

    def __init__(self, draws: Iterator[Tensor]) -> None:
        self.draws = draws

    def __enter__(self) -> None:
        self.randn, self.randn_like = torch.randn, torch.randn_like
        torch.randn = lambda *a, **k: next(self.draws)  # type: ignore[assignment]
        torch.randn_like = lambda x, *a, **k: next(self.draws)  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        torch.randn, torch.randn_like = self.randn, self.randn_like


def run_official(spec: Spec, device: torch.device) -> tuple[dict[str, float], dict[str, Tensor]]:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_official(spec, device, Path(tmp))
    res, ucfg, _ = configs(spec.preset, Path(spec.golden_dir))
    x = make_inputs(res, ucfg, spec.frames, spec.seed)
    x = Inputs(**{k: v.to(device) for k, v in vars(x).items()})
    shape = (1, 3, spec.frames, res // 4, res // 4)
    result: dict[str, Tensor] = {}

    def stage_ddim() -> None:
        with _InjectedNoise(noise_draws(shape, spec.steps, spec.seed, device)):
            result["latent"] = model.diffusion.sample(
                fea, loc, cond=x.cond(), batch_size=1, cond_scale=1.0
            )

    def stage_decode() -> None:
        frames = [
            model.generator.forward_with_flow(
                source_image=x.image,
                optical_flow=x.flow[i : i + 1],
                occlusion_map=x.occlusion[i : i + 1],
            )["prediction"]
            for i in range(spec.frames)
        ]
        result["video"] = torch.cat(frames)

    def stage_e2e() -> None:
        with _InjectedNoise(noise_draws(shape, spec.steps, spec.seed, device)):
            out = model.sample_one_video(
                sample_img=x.image,
                sample_audio_hubert=x.audio,
                sample_pose=x.pose,
                sample_eye=x.eye,
                sample_bbox=x.bbox.clone(),
                cond_scale=1.0,
                init_pose=x.init_pose,
                init_eye=x.init_eye,
            )
        result["latent"] = torch.cat(
            [out["sample_vid_grid"], out["sample_vid_conf"] * 2 - 1], dim=1
        )
        result["video"] = out["sample_out_vid"][0].transpose(0, 1)  # -> (F, 3, S, S)

    with torch.no_grad():
        fea = model.generator.compute_fea(x.image)
        loc = model.face_loc_emb(model.generate_bbox_mask(x.bbox.clone(), size=res))
        stats = measure(
            {"ddim": stage_ddim, "decode": stage_decode, "e2e": stage_e2e}[spec.stage], device
        )
    return stats, result
