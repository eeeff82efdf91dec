"""Official Diffused Heads state dicts -> our modules: prefixes, the duplicated UNet, config from shapes.

Our ``DiffusedHeadsUNet`` keeps the official parameter names, so ``UNET_KEYS_RENAME`` is empty; the SDA
audio encoder keeps SDA's names, and ``AUDIO_KEYS_RENAME`` only strips wrappers a scripted file may add
(unverified: the real ``audio_encoder.pt`` was not available). The train-branch Lightning checkpoint holds
the UNet twice (``unet.`` and ``diffusion.nn_backbone.``); ``lightning_unet_state_dict`` checks that the
copies are equal and keeps one.

Tensor shapes fix every UNet hyper-parameter except the image size and the head width
(``unet_config_from_state_dict`` takes those from a base config: 128 and 64 for CREMA).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from talkinghead import checkpoints
from talkinghead.dawn.convert import apply_renames, strip_wrappers
from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
from talkinghead.diffused_heads.configs import AudioEncoderConfig, DiffusedHeadsUNetConfig
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet

UNET_KEYS_RENAME: list[tuple[str, str]] = []
AUDIO_KEYS_RENAME: list[tuple[str, str]] = [(r"^(model|audio_encoder|module)\.", "")]
LIGHTNING_UNET_PREFIXES = ("unet.", "diffusion.nn_backbone.")
# UNet constructor arguments of the official code -> our field names
OFFICIAL_KWARGS = {
    "image_size": "image_size",
    "in_channels": "in_channels",
    "model_channels": "model_channels",
    "out_channels": "out_channels",
    "num_res_blocks": "num_res_blocks",
    "attention_resolutions": "attention_resolutions",
    "dropout": "dropout",
    "channel_mult": "channel_mult",
    "num_heads": "num_heads",
    "num_head_channels": "num_head_channels",
    "n_motion_frames": "n_motion_frames",
    "n_audio_motion_embs": "n_audio_motion_embs",
}
SUPPORTED_CONDITIONING = {"id_condition_type": "frame", "audio_condition_type": "double_pre_gn"}


def lightning_unet_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The UNet of a train-branch Lightning ``state_dict``: both copies checked equal, one kept.

    Raises:
        ValueError: a copy is missing, the copies differ, or keys outside the two prefixes exist.
    """
    copies: dict[str, dict[str, Tensor]] = {p: {} for p in LIGHTNING_UNET_PREFIXES}
    other = []
    for key, value in strip_wrappers(state_dict).items():
        prefix = next((p for p in LIGHTNING_UNET_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            other.append(key)
        else:
            copies[prefix][key[len(prefix) :]] = value
    if other:
        raise ValueError(
            f"unexpected keys in the Lightning state_dict ({len(other)}): {', '.join(sorted(other))}"
        )
    first, second = (copies[p] for p in LIGHTNING_UNET_PREFIXES)
    if not first:
        raise ValueError(
            "the Lightning state_dict has no 'unet.' keys; is this a Diffused Heads checkpoint?"
        )
    if second:
        only = sorted(set(first) ^ set(second))
        differ = sorted(k for k in set(first) & set(second) if not torch.equal(first[k], second[k]))
        if only or differ:
            raise ValueError(
                "the two UNet copies ('unet.' and 'diffusion.nn_backbone.') disagree: "
                f"keys in one only: {only or 'none'}; different values: {differ or 'none'}"
            )
    return apply_renames(first, UNET_KEYS_RENAME)


def unet_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A TorchScript / plain UNet state dict (no prefix) -> our key names."""
    return apply_renames(strip_wrappers(state_dict), UNET_KEYS_RENAME)


def audio_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An SDA-style encoder state dict -> our key names."""
    return apply_renames(strip_wrappers(state_dict), AUDIO_KEYS_RENAME)


def unet_config_from_official_kwargs(
    kwargs: Mapping[str, object], base: DiffusedHeadsUNetConfig | None = None
) -> DiffusedHeadsUNetConfig:
    """Our config from the official ``UNet(**kwargs)`` / Lightning ``hyper_parameters`` arguments.

    Fields the official code does not have (``num_groups``) come from ``base`` (default: official values).
    """
    for key, wanted in SUPPORTED_CONDITIONING.items():
        if key in kwargs and kwargs[key] != wanted:
            raise ValueError(
                f"{key}={kwargs[key]!r} is not supported (the released model uses {wanted!r})."
            )
    fields: dict[str, object] = {}
    for theirs, ours in OFFICIAL_KWARGS.items():
        if theirs in kwargs:
            value = kwargs[theirs]
            fields[ours] = tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[arg-type]
    if "grayscale_motion" in kwargs:
        fields["motion_channels"] = 1 if kwargs["grayscale_motion"] else 3
    return replace(base or DiffusedHeadsUNetConfig(), **fields)  # type: ignore[arg-type]


def _block_count(keys: list[str], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    return 1 + max((int(m.group(1)) for k in keys if (m := pattern.match(k))), default=-1)


def unet_config_from_state_dict(
    state_dict: Mapping[str, Tensor], base: DiffusedHeadsUNetConfig | None = None
) -> DiffusedHeadsUNetConfig:
    """Infer the architecture from tensor shapes; image size and head width come from ``base``.

    Raises:
        ValueError: no architecture of this family produces these keys and shapes.
    """
    base = base or DiffusedHeadsUNetConfig()
    keys = list(state_dict)
    try:
        mc = state_dict["time_embed.fc.0.weight"].shape[1]
        out_channels = state_dict["out.2.weight"].shape[0]
        first_in = state_dict["input_blocks.0.0.weight"].shape[1]
        window = state_dict["audio_embed.0.weight"].shape[1] // mc
    except KeyError as err:
        raise ValueError(f"not a Diffused Heads UNet state dict: no {err.args[0]!r}") from None
    motion_total = first_in - 2 * base.in_channels
    motion_channels = 3 if motion_total % 3 == 0 else 1
    num_blocks = _block_count(keys, "output_blocks")
    attn_inputs = {
        int(m.group(1)) for k in keys if (m := re.match(r"^input_blocks\.(\d+)\.1\.qkv\.", k))
    }
    for num_res in range(1, num_blocks):
        if num_blocks % (num_res + 1):
            continue
        levels = num_blocks // (num_res + 1)
        mult, attn, ds, index = [], set(), 1, 1
        for level in range(levels):
            width = state_dict.get(f"input_blocks.{index}.0.in_layers.2.weight")
            if width is None:
                break
            mult.append(width.shape[0] // mc)
            for _ in range(num_res):
                if index in attn_inputs:
                    attn.add(base.image_size // ds)
                index += 1
            if level != levels - 1:
                index, ds = index + 1, ds * 2
        if len(mult) != levels:
            continue
        cfg = replace(
            base,
            model_channels=mc,
            out_channels=out_channels,
            num_res_blocks=num_res,
            channel_mult=tuple(mult),
            attention_resolutions=tuple(sorted(attn, reverse=True)),
            motion_channels=motion_channels,
            n_motion_frames=motion_total // motion_channels,
            n_audio_motion_embs=(window - 1) // 2,
        )
        if shapes_match(cfg, state_dict):
            return cfg
    raise ValueError(
        "the UNet weights match no Diffused Heads architecture (unexpected keys or shapes)."
    )


def shapes_match(cfg: DiffusedHeadsUNetConfig, state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the network of ``cfg`` can be built and has exactly these keys and shapes."""
    try:
        with torch.device("meta"):
            model = DiffusedHeadsUNet(cfg)
    except ValueError:
        return False
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return expected == {k: tuple(v.shape) for k, v in state_dict.items()}


def build_unet(
    state_dict: Mapping[str, Tensor], cfg: DiffusedHeadsUNetConfig, what: str = "UNet"
) -> DiffusedHeadsUNet:
    """Strictly load our-named UNet weights into a new module (eval mode); mismatches are listed."""
    return checkpoints.build_and_load(cfg, dict(state_dict), what=what)  # type: ignore[return-value]


def build_audio_encoder(
    state_dict: Mapping[str, Tensor], cfg: AudioEncoderConfig, what: str = "audio encoder"
) -> SDAAudioEncoder:
    """Strictly load our-named audio-encoder weights into a new module (eval mode)."""
    return checkpoints.build_and_load(cfg, dict(state_dict), what=what)  # type: ignore[return-value]
