"""Official DAWN checkpoints -> talkinghead model directories (dawn_spec.md §3, conventions §4).

One function per component, each: ``torch.load(weights_only=True)`` -> select the sub-dict -> strip ``module.`` /
``_orig_mod.`` -> drop deterministic state after checking it -> ONE ordered rename table -> strict load into our
module -> ``(module, config, metadata)``.

================  =========================================  ===============================================
component         official file                              what is dropped
================  =========================================  ===============================================
``flow_ae``       ``LFG_{128_1000ep,256_400ep}.pth``:         optimizer, epoch
                  ``generator`` / ``region_predictor`` /
                  ``bg_predictor``
``unet``          ``DAWN_{128,256}.pth``: ``diffusion``       ``denoise_fn.`` prefix; 12 schedule buffers
                                                              (checked against our cosine schedule); 10 copies
                                                              of the rotary ``freqs`` (checked)
``pose/blink``    ``pbnet[_seperate]/{pose,blink}/``          ``sequence_pos_encoder.pe`` tables, rotary
                  ``checkpoint_*.pth.tar`` + ``opt.yaml``     ``freqs`` (checked)
``face_loc``      none: never saved officially (§3.5)         -- (our seed-1234 asset is used)
================  =========================================  ===============================================

``convert_official_dir`` turns a folder in the Hugging Face layout into ``dawn-128/`` and/or ``dawn-256/``.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from talkinghead import checkpoints
from talkinghead.dawn.configs import FaceLocConfig
from talkinghead.dawn.modules import write_dawn_index
from talkinghead.diffusion import schedules
from talkinghead.errors import first_line
from talkinghead.files import atomic_directory

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "1"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers
LFG_PARTS = ("generator", "region_predictor", "bg_predictor")
FACE_LOC_ASSET = "face_loc_emb_seed1234.safetensors"
# HF ships pbnet/, the official code reads pbnet_seperate/ (dawn_spec §7 item 12)
PBNET_DIRNAMES = ("pbnet", "pbnet_seperate", "pbnet_separate")
ROTARY_SUFFIX = "rotary_emb.freqs"
POSITION_TABLE_SUFFIX = "sequence_pos_encoder.pe"
# PoseBlinkConfig fields that tensor shapes do not determine: taken from opt.yaml (or defaults)
PBNET_OPT_ONLY_FIELDS = ("max_distance", "eval_window", "dropout")

# Ordered (regex, replacement) tables, official key -> our key (diffusers' *_KEYS_RENAME_DICT). Our modules keep
# the official names, so the tables list only real differences.
LFG_KEYS_RENAME: list[tuple[str, str]] = []
UNET_KEYS_RENAME: list[tuple[str, str]] = [(r"^denoise_fn\.", "")]
PBNET_KEYS_RENAME: list[tuple[str, str]] = []

Converted = tuple[nn.Module, Any, dict[str, str]]


# -------------------------------------------------------------------------------------------- key logic


def load_official(path: str | Path) -> Mapping[str, Any]:
    """``torch.load`` restricted to tensors and plain containers (never arbitrary pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise checkpoints.missing_files_error([path.name], path.parent, checkpoints.FETCH_HINT)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"{path} is not a plain tensor checkpoint; refusing to unpickle it ({first_line(err)})."
        ) from err
    if isinstance(obj, Mapping):
        return obj
    raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors.")


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove leading ``module.`` / ``_orig_mod.`` (in any nesting) from every key."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        while new.startswith(WRAPPER_PREFIXES):
            new = new.split(".", 1)[1]
        if new in out:
            raise ValueError(
                f"keys {key!r} and another key both become {new!r} without wrapper prefixes."
            )
        out[new] = value
    return out


def apply_renames(
    state_dict: Mapping[str, Any], table: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """Apply every ``(regex, replacement)`` of ``table`` in order to every key; collisions raise."""
    rules = [(re.compile(pattern), replacement) for pattern, replacement in table]
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, replacement in rules:
            new = pattern.sub(replacement, new)
        if new in out:
            raise ValueError(f"rename table maps two official keys onto {new!r}.")
        out[new] = value
    return out


def check_rotary_freqs(state_dict: Mapping[str, Tensor]) -> list[str]:
    """The rotary ``freqs`` keys, after checking they hold ``1 / 10000**(2k/d)``; returns the keys."""
    from talkinghead.dawn.models.rotary import rotary_frequencies

    keys = [k for k in state_dict if k.endswith(ROTARY_SUFFIX)]
    for key in keys:
        value = state_dict[key]
        expected = rotary_frequencies(2 * value.numel())
        if not torch.allclose(value.float().flatten(), expected, rtol=1e-6, atol=0):
            raise ValueError(
                f"{key} = {value.tolist()} is not the deterministic rotary frequency vector {expected.tolist()}."
            )
    return keys


def check_schedule(buffers: Mapping[str, Tensor]) -> None:
    """Compare the official schedule buffers with our cosine schedule (they are recomputed, not stored)."""
    if not buffers:
        return
    num_steps = next(iter(buffers.values())).numel()
    ours = schedules.diffusion_buffers(num_steps)
    for name, value in buffers.items():
        if not torch.allclose(value.double(), ours[name].double(), rtol=1e-5, atol=1e-7):
            err = (value.double() - ours[name].double()).abs().max().item()
            raise ValueError(
                f"schedule buffer {name!r} differs from the cosine schedule by up to {err:.3g}; "
                "only the official cosine schedule is supported."
            )


def lfg_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Our FlowAutoencoder state dict from an official LFG checkpoint dict (optimizer etc. ignored)."""
    absent = [p for p in LFG_PARTS if p not in checkpoint]
    if absent:
        raise ValueError(f"LFG checkpoint lacks {absent}; it has {sorted(checkpoint)}.")
    sd = {
        f"{part}.{k}": v for part in LFG_PARTS for k, v in strip_wrappers(checkpoint[part]).items()
    }
    return apply_renames(sd, LFG_KEYS_RENAME)


def unet_state_dict(diffusion: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our UNet3D state dict from ``checkpoint['diffusion']``: checks and drops schedule + rotary state."""
    sd = strip_wrappers(diffusion)
    buffers = {name: sd.pop(name) for name in schedules.BUFFER_NAMES if name in sd}
    check_schedule(buffers)
    for key in check_rotary_freqs(sd):
        del sd[key]
    stray = sorted(k for k in sd if not k.startswith("denoise_fn."))
    if stray:
        raise ValueError(
            f"checkpoint['diffusion'] has keys outside denoise_fn.: {', '.join(stray)}"
        )
    return apply_renames(sd, UNET_KEYS_RENAME)


def pbnet_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our PoseBlinkCVAE state dict from an official (bare) PBNet state dict."""
    sd = strip_wrappers(state_dict)
    for key in check_rotary_freqs(sd):
        del sd[key]
    # sinusoidal position tables: deterministic, unused at inference, 36 MB of the 45 MB file
    for key in [k for k in sd if k.endswith(POSITION_TABLE_SUFFIX)]:
        del sd[key]
    return apply_renames(sd, PBNET_KEYS_RENAME)


# --------------------------------------------------------------------------------------------- opt.yaml


class _TolerantSafeLoader(yaml.SafeLoader):
    """SafeLoader that reads unknown tags (``!!python/tuple``, ``!!python/object...``) as plain data.

    The official ``save_args`` may dump python-tagged values; we only need the plain numbers and strings, and we
    never construct python objects (no ``yaml.Loader``).
    """


def _construct_untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_TolerantSafeLoader.add_multi_constructor("", _construct_untagged)


def read_opt_yaml(path: str | Path) -> dict[str, Any]:
    """The PBNet training ``parameters`` dict of an official ``opt.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise checkpoints.missing_files_error([path.name], path.parent, checkpoints.FETCH_HINT)
    text = path.read_text(encoding="utf-8")
    try:
        opt = yaml.safe_load(text)
    except yaml.constructor.ConstructorError:
        opt = yaml.load(
            text, Loader=_TolerantSafeLoader
        )  # a SafeLoader subclass: no python objects
    if isinstance(opt, dict):
        return opt
    raise ValueError(f"{path} does not hold a mapping of options.")


# ----------------------------------------------------------------------------------- per-component API


def _metadata(path: Path, component: str, **extra: str) -> dict[str, str]:
    return {
        "component": component,
        "source_file": path.name,
        "source_sha256": checkpoints.sha256_file(path),
        "converter_version": CONVERTER_VERSION,
        **extra,
    }


def convert_lfg(path: str | Path) -> Converted:
    """``LFG_*.pth`` -> (FlowAutoencoder, FlowAEConfig, metadata)."""
    from talkinghead.dawn.models import flow_autoencoder

    path = Path(path)
    sd = lfg_state_dict(load_official(path))
    cfg = flow_autoencoder.config_from_state_dict(sd)
    model = checkpoints.build_and_load(cfg, sd, what=f"FlowAutoencoder from {path.name}")
    return model, cfg, _metadata(path, "flow_ae")


def convert_unet(path: str | Path) -> Converted:
    """``DAWN_*.pth`` -> (UNet3D, UNet3DConfig, metadata)."""
    from talkinghead.dawn.models import unet3d

    path = Path(path)
    checkpoint = load_official(path)
    if "diffusion" not in checkpoint:
        raise ValueError(f"{path} has no 'diffusion' entry (keys: {sorted(checkpoint)}).")
    sd = unet_state_dict(checkpoint["diffusion"])
    cfg = unet3d.config_from_state_dict(sd)
    model = checkpoints.build_and_load(cfg, sd, what=f"UNet3D from {path.name}")
    return model, cfg, _metadata(path, "unet")


def convert_pbnet(ckpt_path: str | Path, opt_yaml_path: str | Path, motion_dim: int) -> Converted:
    """PBNet ``checkpoint_*.pth.tar`` + ``opt.yaml`` -> (PoseBlinkCVAE, PoseBlinkConfig, metadata).

    Args:
        motion_dim: 6 for the pose net, 2 for the blink net (checked against the weights).
    """
    from talkinghead.dawn.models import pose_blink_cvae

    ckpt_path, opt_yaml_path = Path(ckpt_path), Path(opt_yaml_path)
    official = load_official(ckpt_path)
    from_weights = pose_blink_cvae.config_from_state_dict(strip_wrappers(official))
    if from_weights.motion_dim != motion_dim:
        raise ValueError(
            f"{ckpt_path} predicts {from_weights.motion_dim} channels, not motion_dim={motion_dim} "
            "(pose has 6, blink has 2: are pose/ and blink/ swapped?)."
        )
    from_opt = pose_blink_cvae.config_from_opt_yaml(read_opt_yaml(opt_yaml_path), motion_dim)
    # Shapes are authoritative; opt.yaml adds what shapes cannot show (max_distance, dropout).
    visible = [
        f.name for f in dataclasses.fields(from_weights) if f.name not in PBNET_OPT_ONLY_FIELDS
    ]
    disagree = [n for n in visible if getattr(from_opt, n) != getattr(from_weights, n)]
    if disagree:
        logger.warning(
            "%s: opt.yaml disagrees with the weights on %s; using the weights",
            opt_yaml_path,
            disagree,
        )
    cfg = dataclasses.replace(from_opt, **{n: getattr(from_weights, n) for n in visible})
    sd = pbnet_state_dict(official)
    component = "pose" if motion_dim == 6 else "blink"
    model = checkpoints.build_and_load(cfg, sd, what=f"PoseBlinkCVAE from {ckpt_path.name}")
    meta = _metadata(ckpt_path, component, opt_sha256=checkpoints.sha256_file(opt_yaml_path))
    return model, cfg, meta


def face_loc_asset() -> Path:
    """Path of the packaged seed-1234 face-location weights (dawn_spec §3.5, §7 item 2)."""
    return Path(str(resources.files("talkinghead") / "assets" / FACE_LOC_ASSET))


def convert_face_loc() -> Converted:
    """The face-location encoder from our asset: official training used these seed-1234 weights, and no official
    checkpoint contains them (the official inference draws fresh random ones every run)."""
    path = face_loc_asset()
    sd = load_file(str(path))
    cfg = FaceLocConfig(
        out_channels=sd["conv2.weight"].shape[0], hidden_channels=sd["conv1.weight"].shape[0]
    )
    model = checkpoints.build_and_load(cfg, sd, what="FaceLocationEncoder from the seed-1234 asset")
    return model, cfg, _metadata(path, "face_loc")


# ------------------------------------------------------------------------------------- whole directories


def _newest_checkpoint(folder: Path) -> Path | None:
    """``checkpoint_<step>.pth.tar`` with the largest step (the HF folders hold one)."""
    found = sorted(
        folder.glob("checkpoint_*.pth.tar"),
        key=lambda p: (int(m[1]) if (m := re.search(r"checkpoint_(\d+)", p.name)) else -1, p.name),
    )
    return found[-1] if found else None


def find_official_files(
    src_dir: str | Path, resolutions: Iterable[int] = (128, 256)
) -> dict[str, Path]:
    """Locate the official files in a folder laid out like the Hugging Face repository ``Hanbo-Cheng/DAWN``.

    Returns:
        ``{"pose", "pose_opt", "blink", "blink_opt", "unet_128", "flow_ae_128", ...}`` -> path.
    Raises:
        MissingFilesError: one sentence naming every missing file and the command that fetches them.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise checkpoints.MissingFilesError(f"{src} is not a directory; {checkpoints.FETCH_HINT}.")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for res in resolutions:
        if res not in (128, 256):
            raise ValueError(f"resolution={res} must be 128 or 256.")
        unet = src / f"DAWN_{res}.pth"
        lfg = sorted(src.glob(f"LFG_{res}_*.pth"))
        if unet.is_file():
            found[f"unet_{res}"] = unet
        else:
            missing.append(unet.name)
        if lfg:
            found[f"flow_ae_{res}"] = lfg[-1]
        else:
            missing.append(f"LFG_{res}_*.pth")
    pbnet = next((src / n for n in PBNET_DIRNAMES if (src / n).is_dir()), src / PBNET_DIRNAMES[0])
    for net in ("pose", "blink"):
        ckpt = _newest_checkpoint(pbnet / net)
        opt = pbnet / net / "opt.yaml"
        if ckpt is None:
            missing.append(f"{pbnet.name}/{net}/checkpoint_*.pth.tar")
        else:
            found[net] = ckpt
        if opt.is_file():
            found[f"{net}_opt"] = opt
        else:
            missing.append(f"{pbnet.name}/{net}/opt.yaml")
    if missing:
        raise checkpoints.missing_files_error(missing, src, checkpoints.FETCH_HINT)
    return found


def _write_model_dir(
    out_dir: Path,
    name: str,
    resolution: int,
    parts: Mapping[str, Converted],
    src: Path,
    files: Mapping[str, Path],
) -> Path:
    """Write one model directory atomically: into a temp dir next to it, then rename."""
    final = out_dir / name
    with atomic_directory(final) as tmp:
        for component, (model, cfg, meta) in parts.items():
            key = {"flow_ae": f"flow_ae_{resolution}", "unet": f"unet_{resolution}"}.get(
                component, component
            )
            if key in files:
                meta = {**meta, "source_file": files[key].relative_to(src).as_posix()}
            checkpoints.save_component(model, cfg, tmp / component, meta)
        write_dawn_index(tmp, resolution, audio_features="hubert")  # official DAWN: HuBERT-large
    return final


def convert_official_dir(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    resolutions: Iterable[int] = (128, 256),
    progress: bool = True,
) -> list[Path]:
    """Convert a folder in the HF layout into ``out_dir/dawn-128`` and/or ``out_dir/dawn-256``.

    PBNet (pose, blink) and the face-location encoder are shared by both resolutions.

    Args:
        src_dir: holds ``DAWN_{res}.pth``, ``LFG_{res}_*.pth`` and ``pbnet/`` or ``pbnet_seperate/`` with
            ``{pose,blink}/checkpoint_*.pth.tar`` + ``opt.yaml``.
        out_dir: created if needed; existing model directories of the same name are replaced.
        resolutions: which models to write.
        progress: show a tqdm bar.
    Returns:
        The written model directories.
    """
    src, out = Path(src_dir), Path(out_dir)
    resolutions = tuple(dict.fromkeys(int(r) for r in resolutions))
    files = find_official_files(src, resolutions)
    out.mkdir(parents=True, exist_ok=True)

    shared_jobs: dict[str, Callable[[], Converted]] = {
        "pose": lambda: convert_pbnet(files["pose"], files["pose_opt"], 6),
        "blink": lambda: convert_pbnet(files["blink"], files["blink_opt"], 2),
        "face_loc": convert_face_loc,
    }
    shared: dict[str, Converted] = {}
    written: list[Path] = []
    total = len(shared_jobs) + len(resolutions)
    with tqdm(total=total, desc="convert", unit="part", disable=not progress) as bar:
        for name, job in shared_jobs.items():
            bar.set_postfix_str(name)
            logger.info("converting %s", name)
            shared[name] = job()
            bar.update(1)
        for res in resolutions:
            bar.set_postfix_str(f"dawn-{res}")
            logger.info("converting dawn-%d", res)
            parts = {
                "flow_ae": convert_lfg(files[f"flow_ae_{res}"]),
                "unet": convert_unet(files[f"unet_{res}"]),
                **shared,
            }
            written.append(_write_model_dir(out, f"dawn-{res}", res, parts, src, files))
            del parts  # the full-size LFG + UNet of one resolution are ~0.5 GB
            bar.update(1)
    return written
