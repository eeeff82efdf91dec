"""The family registry: which pipeline, converter, training stages and networks make up a model family.

A family is one folder (``talkinghead/<family>/``) holding its configs, networks, checkpoint converter,
pipeline and training objectives. Everything else in the package is family-free and finds a family
only through this table: ``model_index.json`` names the family of a model directory, ``load_pipeline``
dispatches on it, the CLI builds ``generate`` flags from the family's options dataclass and ``train``
stages from its training modules, and ``config.json`` type names resolve to networks here.

Adding a family = its folder + one ``Family(...)`` line in ``FAMILIES`` + its tests (docs/families.md).
Entries are strings (``"module:attr"``) so that nothing heavy is imported until it is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: registry name, written into ``model_index.json`` (e.g. ``"dawn"``).
        description: one line for ``talkinghead models`` and the server's ``/v1/models``.
        pipeline: ``"module:Class"`` of its pipeline (``pipelines.base.TalkingHeadPipeline``).
        options: ``"module:Class"`` of its runtime options dataclass (the pipeline's
            ``options_class``), in a module light enough for ``--help``: the ``generate`` flags.
        converter: ``"module:function"`` converting official files into a model directory,
            ``convert(src, out_dir) -> Path``; None if the family has no official release.
        training: training stage name -> module providing ``build_task(cfg)`` and
            ``export(run_dir, model_dir)``.
        components: ``config.json`` type name -> (``"module:ConfigClass"``, ``"module:NetworkClass"``).
        takes_video: whether its source may be a video of the person (DiffTalk re-voices videos).
        takes_drivers: whether its pipeline can be driven by given pose and blink tracks and renders
            through a flow autoencoder (DAWN's ``motion`` / ``sample_latents`` / ``decode`` stages
            and ``modules.flow_ae``); ``eval-synth`` then scores the autoencoder on its own too.
        stream_options: ``"module:Class"`` of the windowing options of its pipeline's ``stream``
            (light, as ``options``): the ``generate --stream`` flags; None if it does not stream.
    """

    name: str
    description: str
    pipeline: str
    options: str
    converter: str | None = None
    training: dict[str, str] = field(default_factory=dict)
    components: dict[str, tuple[str, str]] = field(default_factory=dict)
    takes_video: bool = False
    takes_drivers: bool = False
    stream_options: str | None = None


_DAWN_MODELS = "talkinghead.dawn.models"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="dawn",
            description="DAWN (arXiv 2410.13726): the whole clip's motion in one diffusion pass "
            "over latent flows; portrait + speech.",
            pipeline="talkinghead.dawn.pipeline:DawnPipeline",
            options="talkinghead.dawn.configs:GenerateOptions",
            stream_options="talkinghead.dawn.configs:StreamOptions",
            takes_drivers=True,
            converter="talkinghead.dawn.convert:convert_official_dir",
            training={
                "lfg": "talkinghead.dawn.training.lfg",
                "pbnet": "talkinghead.dawn.training.pbnet",
                "a2v": "talkinghead.dawn.training.a2v",
                "a2v-distill": "talkinghead.dawn.training.distill",
            },
            components={
                "FlowAEConfig": (
                    "talkinghead.dawn.configs:FlowAEConfig",
                    f"{_DAWN_MODELS}.flow_autoencoder:FlowAutoencoder",
                ),
                "PoseBlinkConfig": (
                    "talkinghead.dawn.configs:PoseBlinkConfig",
                    f"{_DAWN_MODELS}.pose_blink_cvae:PoseBlinkCVAE",
                ),
                "UNet3DConfig": (
                    "talkinghead.dawn.configs:UNet3DConfig",
                    f"{_DAWN_MODELS}.unet3d:UNet3D",
                ),
                "FaceLocConfig": (
                    "talkinghead.dawn.configs:FaceLocConfig",
                    f"{_DAWN_MODELS}.face_location:FaceLocationEncoder",
                ),
            },
        ),
        Family(
            name="diffused-heads",
            description="Diffused Heads (WACV 2024): autoregressive pixel diffusion of a face "
            "from one frame and speech (CREMA release).",
            pipeline="talkinghead.diffused_heads.pipeline:DiffusedHeadsPipeline",
            options="talkinghead.diffused_heads.options:DiffusedHeadsOptions",
            converter="talkinghead.diffused_heads.convert:convert",
            training={"diffused-heads": "talkinghead.diffused_heads.training"},
            components={
                "DiffusedHeadsUNetConfig": (
                    "talkinghead.diffused_heads.configs:DiffusedHeadsUNetConfig",
                    "talkinghead.diffused_heads.unet:DiffusedHeadsUNet",
                ),
                "AudioEncoderConfig": (
                    "talkinghead.diffused_heads.configs:AudioEncoderConfig",
                    "talkinghead.diffused_heads.audio_encoder:SDAAudioEncoder",
                ),
            },
        ),
        Family(
            name="difftalk",
            description="DiffTalk (CVPR 2023): lip-syncs a person's video by latent-diffusion "
            "inpainting of the lower face (LDM VQ-f4 + UNet).",
            pipeline="talkinghead.difftalk.pipeline:DiffTalkPipeline",
            options="talkinghead.difftalk.configs:DiffTalkOptions",
            converter="talkinghead.difftalk.convert:convert",
            training={
                "difftalk-vq": "talkinghead.difftalk.vq_training",
                "difftalk": "talkinghead.difftalk.training",
            },
            takes_video=True,
            components={
                "DiffTalkVQConfig": (
                    "talkinghead.difftalk.configs:DiffTalkVQConfig",
                    "talkinghead.difftalk.networks:build_first_stage",
                ),
                "DiffTalkUNetConfig": (
                    "talkinghead.difftalk.configs:DiffTalkUNetConfig",
                    "talkinghead.difftalk.networks:build_denoiser",
                ),
                "DiffTalkConditionConfig": (
                    "talkinghead.difftalk.configs:DiffTalkConditionConfig",
                    "talkinghead.difftalk.conditioning:ConditionEncoder",
                ),
            },
        ),
    )
}


def resolve(reference: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_family(name: str) -> Family:
    """The registered family called ``name``; a ValueError names the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(
            f"unknown model family {name!r}; this version of talkinghead knows {', '.join(FAMILIES)}."
        )
    return FAMILIES[name]


def training_stages() -> dict[str, str]:
    """Every family's training stages: stage name -> module."""
    return {stage: module for f in FAMILIES.values() for stage, module in f.training.items()}


def component_classes(type_name: str) -> tuple[type, type]:
    """(config class, network class) of a ``config.json`` type name, from any family."""
    for family in FAMILIES.values():
        if type_name in family.components:
            config_ref, network_ref = family.components[type_name]
            return resolve(config_ref), resolve(network_ref)
    raise ValueError(f"config.json names an unknown config type {type_name!r}.")
