"""Official DiffTalk / LDM checkpoints -> a DiffTalk model directory (spec §3.3, conventions §4).

Inputs, read for tensors only (``torch_archive.read_checkpoint``; ``.safetensors`` as is):

* the DiffTalk Lightning ``.ckpt`` (``state_dict`` with ``model.diffusion_model.*``, ``model_ema.*``,
  ``first_stage_model.*``, ``cond_stage_model_for_{audio,audio_smooth,ldm}.*`` and 12 schedule
  buffers), or the same tree without ``model_ema.*`` (the golden file);
* LDM's ``vq-f4`` first-stage ``model.ckpt`` on its own (``convert_first_stage``): un-prefixed VQ
  names plus ``loss.*`` (discriminator / LPIPS training weights, dropped).

What happens to each official key:

======================================  ==================================================
``model_ema.diffusion_model<dot-less>`` the UNet weights used (the official samples in
                                        ``ema_scope()``); names restored from the
                                        ``model.diffusion_model.*`` keys; ``decay``,
                                        ``num_updates`` dropped
``model.diffusion_model.*``             the UNet when there is no EMA (or ``use_ema=False``)
``first_stage_model.*``                 ``first_stage`` (``VQ_KEYS_RENAME``)
``cond_stage_model_for_*``              ``condition`` (``CONDITION_KEYS_RENAME``)
schedule buffers                        checked equal to ``scaled_linear_betas``, dropped
anything else                           an error listing it (strict)
======================================  ==================================================

Each component has ONE ordered (regex, replacement) table; the UNet's and the VQ's are generated
from the config because the official block indices are flat counters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from talkinghead import checkpoints
from talkinghead.dawn.convert import apply_renames
from talkinghead.difftalk.configs import (
    AUDIO_FEATURES,
    DiffTalkConditionConfig,
    DiffTalkConfig,
    DiffTalkUNetConfig,
    DiffTalkVQConfig,
)
from talkinghead.difftalk.model_dir import DiffTalkModules, save_model_dir
from talkinghead.diffusion.schedules import BUFFER_NAMES, buffers_from_betas, scaled_linear_betas
from talkinghead.torch_archive import read_checkpoint, tensor_state_dict

CONVERTER_VERSION = "1"
UNET_PREFIX, EMA_PREFIX, VQ_PREFIX = "model.diffusion_model.", "model_ema.", "first_stage_model."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")
VQ_TRAINING_PREFIX = "loss."  # vq-f4 model.ckpt: discriminator + LPIPS, training only

CONDITION_KEYS_RENAME: list[tuple[str, str]] = [
    (r"^cond_stage_model_for_audio\.", "audio."),
    (r"^cond_stage_model_for_audio_smooth\.", "audio_smooth."),
    (r"^cond_stage_model_for_ldm\.", "landmarks."),
]
# LDM ResBlock / SpatialTransformer inner names -> diffusers (SpatialTransformer names already agree)
_UNET_INNER_RENAME: list[tuple[str, str]] = [
    (r"\.in_layers\.0\.", ".norm1."),
    (r"\.in_layers\.2\.", ".conv1."),
    (r"\.emb_layers\.1\.", ".time_emb_proj."),
    (r"\.out_layers\.0\.", ".norm2."),
    (r"\.out_layers\.3\.", ".conv2."),
    (r"\.skip_connection\.", ".conv_shortcut."),
]
_VQ_ATTENTION_LINEARS = re.compile(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def unet_keys_rename(cfg: DiffTalkUNetConfig) -> list[tuple[str, str]]:
    """LDM ``UNetModel`` key -> diffusers ``UNet2DConditionModel`` key, in application order."""
    table = [
        (r"^time_embed\.0\.", "time_embedding.linear_1."),
        (r"^time_embed\.2\.", "time_embedding.linear_2."),
        (r"^input_blocks\.0\.0\.", "conv_in."),
        (r"^middle_block\.0\.", "mid_block.resnets.0."),
        (r"^middle_block\.1\.", "mid_block.attentions.0."),
        (r"^middle_block\.2\.", "mid_block.resnets.1."),
        (r"^out\.0\.", "conv_norm_out."),
        (r"^out\.2\.", "conv_out."),
    ]
    levels, last = cfg.attention_levels, len(cfg.attention_levels) - 1
    k = 1  # input_blocks.k: ResBlock (+ SpatialTransformer) per entry, then a Downsample
    for level, attention in enumerate(levels):
        for j in range(cfg.num_res_blocks):
            table.append((rf"^input_blocks\.{k}\.0\.", f"down_blocks.{level}.resnets.{j}."))
            if attention:
                table.append((rf"^input_blocks\.{k}\.1\.", f"down_blocks.{level}.attentions.{j}."))
            k += 1
        if level != last:
            table.append(
                (rf"^input_blocks\.{k}\.0\.op\.", f"down_blocks.{level}.downsamplers.0.conv.")
            )
            k += 1
    k = 0  # output_blocks.k: ResBlock (+ SpatialTransformer) (+ Upsample at a level's end)
    for up, attention in enumerate(reversed(levels)):
        for j in range(cfg.num_res_blocks + 1):
            table.append((rf"^output_blocks\.{k}\.0\.", f"up_blocks.{up}.resnets.{j}."))
            if attention:
                table.append((rf"^output_blocks\.{k}\.1\.", f"up_blocks.{up}.attentions.{j}."))
            if j == cfg.num_res_blocks and up != last:
                index = 2 if attention else 1
                table.append(
                    (rf"^output_blocks\.{k}\.{index}\.conv\.", f"up_blocks.{up}.upsamplers.0.conv.")
                )
            k += 1
    return table + _UNET_INNER_RENAME


def vq_keys_rename(cfg: DiffTalkVQConfig) -> list[tuple[str, str]]:
    """LDM ``VQModel`` key -> diffusers ``VQModel`` key (decoder levels run in reverse order)."""
    n = len(cfg.channel_mult)
    return [
        (r"^encoder\.down\.(\d+)\.", r"encoder.down_blocks.\1."),
        *[(rf"^decoder\.up\.{i}\.", f"decoder.up_blocks.{n - 1 - i}.") for i in range(n)],
        (r"\.block\.(\d+)\.", r".resnets.\1."),
        (r"\.downsample\.conv\.", ".downsamplers.0.conv."),
        (r"\.upsample\.conv\.", ".upsamplers.0.conv."),
        (r"\.mid\.block_1\.", ".mid_block.resnets.0."),
        (r"\.mid\.block_2\.", ".mid_block.resnets.1."),
        (r"\.mid\.attn_1\.norm\.", ".mid_block.attentions.0.group_norm."),
        (r"\.mid\.attn_1\.(q|k|v)\.", r".mid_block.attentions.0.to_\1."),
        (r"\.mid\.attn_1\.proj_out\.", ".mid_block.attentions.0.to_out.0."),
        (r"\.nin_shortcut\.", ".conv_shortcut."),
        (r"\.norm_out\.", ".conv_norm_out."),
    ]


def convert_vq_state_dict(state: Mapping[str, Tensor], cfg: DiffTalkVQConfig) -> dict[str, Tensor]:
    """Un-prefixed LDM VQ keys -> diffusers ``VQModel`` keys; 1x1-conv attention weights -> Linear."""
    out = apply_renames(state, vq_keys_rename(cfg))
    return {k: v.flatten(1) if _VQ_ATTENTION_LINEARS.search(k) else v for k, v in out.items()}


def restore_ema_names(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``model_ema.diffusion_model<name without dots>`` -> ``<UNet name>`` (names from the raw UNet keys)."""
    names = [k[len(UNET_PREFIX) :] for k in state if k.startswith(UNET_PREFIX)]
    by_dotless = {("diffusion_model." + n).replace(".", ""): n for n in names}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(EMA_PREFIX) or key in EMA_BOOKKEEPING:
            continue
        dotless = key[len(EMA_PREFIX) :]
        if dotless not in by_dotless:
            raise ValueError(f"EMA entry {key!r} matches no model.diffusion_model.* parameter.")
        out[by_dotless[dotless]] = value
    if out and set(out) != set(names):
        missing = sorted(set(names) - set(out))
        raise ValueError(
            f"the EMA copy lacks {len(missing)} UNet weights: {', '.join(missing[:10])}."
        )
    return out


def check_schedule(buffers: Mapping[str, Tensor], cfg: DiffTalkConfig) -> None:
    """The official buffers must equal ours for ``cfg``'s betas (they are recomputed, not stored)."""
    betas = scaled_linear_betas(cfg.num_train_steps, cfg.beta_start, cfg.beta_end)
    ours = buffers_from_betas(betas)
    for name, value in buffers.items():
        if value.shape != ours[name].shape or not torch.equal(value.float(), ours[name]):
            raise ValueError(
                f"schedule buffer {name!r} is not LDM's linear schedule from {cfg.beta_start} to "
                f"{cfg.beta_end} over {cfg.num_train_steps} steps; only that schedule is supported."
            )


def infer_config(state: Mapping[str, Tensor], image_size: int = 256) -> DiffTalkConfig:
    """The official architecture with the widths read from the weights (reduced models convert too)."""
    unet = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    try:
        denoiser = DiffTalkUNetConfig(
            in_channels=unet["input_blocks.0.0.weight"].shape[1],
            out_channels=unet["out.2.weight"].shape[0],
            model_channels=unet["time_embed.0.weight"].shape[1],
            context_dim=unet["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        )
        first_stage = DiffTalkVQConfig(
            base_channels=state[VQ_PREFIX + "encoder.conv_in.weight"].shape[0],
            num_embeddings=state[VQ_PREFIX + "quantize.embedding.weight"].shape[0],
            latent_channels=state[VQ_PREFIX + "quantize.embedding.weight"].shape[1],
        )
        audio = state["cond_stage_model_for_audio.encoder_conv.0.weight"].shape[1]
    except KeyError as err:
        raise ValueError(f"not a DiffTalk checkpoint: it has no {err.args[0]!r}.") from None
    features = {v: k for k, v in AUDIO_FEATURES.items()}.get(audio, "deepspeech")
    return DiffTalkConfig(
        first_stage=first_stage,
        denoiser=denoiser,
        condition=DiffTalkConditionConfig(audio_channels=audio),
        image_size=image_size,
        audio_features=features,
    )


def split_checkpoint(
    state: Mapping[str, Tensor], cfg: DiffTalkConfig, *, use_ema: bool = True
) -> dict[str, dict[str, Tensor]]:
    """Official LatentDiffusion state dict -> {component: our state dict}; strict on leftovers."""
    buffers = {k: v for k, v in state.items() if k in BUFFER_NAMES}
    check_schedule(buffers, cfg)
    ema = restore_ema_names(state)
    raw = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    unet = ema if (ema and use_ema) else raw
    vq = {k[len(VQ_PREFIX) :]: v for k, v in state.items() if k.startswith(VQ_PREFIX)}
    condition = apply_renames(
        {k: v for k, v in state.items() if k.startswith("cond_stage_model_for_")},
        CONDITION_KEYS_RENAME,
    )
    known = (UNET_PREFIX, EMA_PREFIX, VQ_PREFIX, "cond_stage_model_for_")
    left = sorted(k for k in state if k not in BUFFER_NAMES and not k.startswith(known))
    if left:
        raise ValueError(
            f"unexpected keys in the checkpoint ({len(left)}): {', '.join(left[:20])}."
        )
    return {
        "unet": apply_renames(unet, unet_keys_rename(cfg.denoiser)),
        "first_stage": convert_vq_state_dict(vq, cfg.first_stage),
        "condition": condition,
    }


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a (Lightning) torch ``.ckpt`` / ``.pth``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass the path of the .ckpt file."
        )
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return tensor_state_dict(read_checkpoint(path), str(path))


def modules_from_state_dict(
    state: Mapping[str, Tensor], cfg: DiffTalkConfig, *, use_ema: bool = True, what: str = ""
) -> DiffTalkModules:
    """Build the three networks of ``cfg`` on meta and strictly load the converted weights (float32)."""
    parts = split_checkpoint(state, cfg, use_ema=use_ema)
    configs = {"first_stage": cfg.first_stage, "unet": cfg.denoiser, "condition": cfg.condition}
    nets = {
        name: checkpoints.build_and_load(
            configs[name], {k: v.float() for k, v in sd.items()}, what=f"{what} {name}".strip()
        )
        for name, sd in parts.items()
    }
    return DiffTalkModules(config=cfg, **nets)


def _metadata(src: Path) -> dict[str, str]:
    return {
        "source_file": src.name,
        "source_sha256": checkpoints.sha256_file(src),
        "converter_version": CONVERTER_VERSION,
    }


def convert(
    src: Path,
    out_dir: Path,
    *,
    config: DiffTalkConfig | None = None,
    image_size: int = 256,
    use_ema: bool = True,
) -> Path:
    """Official DiffTalk checkpoint ``src`` -> our model directory ``out_dir`` (returned).

    Args:
        config: the architecture; None infers the widths from the weights (official layout) with
            ``image_size``.
        use_ema: take the EMA UNet weights when the file has them (as the official inference).
    """
    src, out_dir = Path(src), Path(out_dir)
    state = read_state_dict(src)
    cfg = config or infer_config(state, image_size)
    modules = modules_from_state_dict(state, cfg, use_ema=use_ema, what=str(src))
    return save_model_dir(modules, out_dir, _metadata(src))


def convert_first_stage(
    src: Path, out_dir: Path, *, config: DiffTalkVQConfig | None = None
) -> Path:
    """LDM's first-stage checkpoint (e.g. ``vq-f4/model.ckpt``) -> ``out_dir`` (config + weights).

    ``loss.*`` (discriminator and LPIPS, training only) is dropped; everything else loads strictly.
    """
    src, out_dir = Path(src), Path(out_dir)
    state = read_state_dict(src)
    state = {
        k.removeprefix(VQ_PREFIX): v
        for k, v in state.items()
        if not k.startswith(VQ_TRAINING_PREFIX)
    }
    if config is None:
        try:
            embedding = state["quantize.embedding.weight"]
            config = DiffTalkVQConfig(
                base_channels=state["encoder.conv_in.weight"].shape[0],
                num_embeddings=embedding.shape[0],
                latent_channels=embedding.shape[1],
            )
        except KeyError as err:
            raise ValueError(f"{src} is not an LDM VQ checkpoint: no {err.args[0]!r}.") from None
    converted = {k: v.float() for k, v in convert_vq_state_dict(state, config).items()}
    model = checkpoints.build_and_load(config, converted, what=str(src))
    return checkpoints.save_component(
        model, config, out_dir, {"component": "first_stage", **_metadata(src)}
    )
