"""Training configuration: one frozen ``TrainConfig`` per run (conventions §3, dawn_spec.md §5).

Fields left at ``None`` take the official value of the stage (``STAGE_DEFAULTS``: optimiser, learning
rate, betas, batch size, clip length), so every default lives in exactly one place. ``resolve()``
fills them in; the resolved config is what goes into ``RUN_DIR/train_config.json`` and into every
checkpoint, so a run can be resumed or exported without the original command line.

Official values (spec §5): LFG Adam(lr 2e-4, betas (0.5, 0.999)); PBNet AdamW(lr 4e-4), batch 40,
200-frame windows, grad-clip 2.0, KL weight 0.004; A2V-FDM Adam(lr 2e-4, betas (0.9, 0.99)),
grad-clip 2.0, stage 1: 20-frame clips, batch 20, reference = first frame; stage 2: 30-40 frames,
batch 40, random reference frame; loss = eps-MSE + 0.15 flow loss + 0.15 mouth loss, condition
dropout 0.1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from talkinghead.dawn.configs import PRESETS, DawnConfig
from talkinghead.families import training_stages
from talkinghead.files import write_json

PRECISIONS = ("fp32", "bf16")
CONFIG_FILE = "train_config.json"

# stage -> official values of the fields that default to None
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "lfg": {
        "optimizer": "adam",
        "lr": 2e-4,
        "betas": (0.5, 0.999),
        "batch_size": 20,
        "grad_clip": 0.0,
        "clip_frames": 2,
    },
    "pbnet": {
        "optimizer": "adamw",
        "lr": 4e-4,
        "betas": (0.9, 0.999),
        "batch_size": 40,
        "grad_clip": 2.0,
        "clip_frames": 200,
    },
    "a2v": {
        "optimizer": "adam",
        "lr": 2e-4,
        "betas": (0.9, 0.99),
        "batch_size": 20,
        "grad_clip": 2.0,
        "clip_frames": 20,
    },
    # A2V-FDM step distillation (dawn/training/distill.py), not official: a2v's optimiser and
    # clips at half its learning rate, since the student starts from the trained teacher
    "a2v-distill": {
        "optimizer": "adam",
        "lr": 1e-4,
        "betas": (0.9, 0.99),
        "batch_size": 20,
        "grad_clip": 2.0,
        "clip_frames": 20,
    },
    # DiffTalk (difftalk_spec.md §4.3): AdamW at LDM's scaled lr (1e-6 x 8 GPUs x batch 8),
    # Lightning's gradient_clip_val 0.1 (a norm), one frame per item
    "difftalk": {
        "optimizer": "adamw",
        "lr": 6.4e-5,
        "betas": (0.9, 0.999),
        "batch_size": 8,
        "grad_clip": 0.1,
        "clip_frames": 1,
    },
    # Diffused Heads (diffusedheads_spec.md §4.3): Adam lr 5e-5, batch 10 per GPU, no clipping
    "diffused-heads": {
        "optimizer": "adam",
        "lr": 5e-5,
        "betas": (0.9, 0.999),
        "batch_size": 10,
        "grad_clip": 0.0,
        "clip_frames": 1,
    },
}
# a stage without official values above (another family's) starts from these
GENERIC_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-4,
    "betas": (0.9, 0.999),
    "batch_size": 8,
    "grad_clip": 1.0,
    "clip_frames": 1,
}
A2V_STAGE2 = {"batch_size": 40, "clip_frames": 40}  # curriculum stage 2 overrides (spec §5.3)
A2V_STAGES = ("a2v", "a2v-distill")  # the stages that train an A2V-FDM UNet on clips


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. ``None`` = the stage's official value (see module doc)."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "precision": PRECISIONS,
        "optimizer": ("adam", "adamw"),
        "net": ("pose", "blink"),
        "curriculum": (1, 2),
        "lfg_pairs": ("random", "mouth"),
        "a2v_reference": ("first", "random", "open"),
    }

    stage: str  # a training stage of a registered family (families.training_stages()): "lfg", ...
    data: str  # training-set folder (manifest.json, clips/)
    run_dir: str  # checkpoints, logs, samples and the resolved config go here
    preset: str = "tiny"  # architecture preset (configs.PRESETS); audio width follows the data
    steps: int = 1000  # optimiser steps in total
    # train for about this many minutes: the step count (at most --steps) is fixed from the
    # speed of the first steps, before a warm-up of at least that length ends (loop.py)
    time_budget_min: float | None = None
    batch_size: int | None = None  # items per optimiser step and process (before accumulation)
    grad_accum: int = 1  # micro-batches accumulated per optimiser step
    optimizer: str | None = None  # "adam" | "adamw"
    lr: float | None = None  # peak learning rate
    lr_min: float = 1e-6  # cosine decay floor, reached at `steps`
    warmup_steps: int = 0  # linear warm-up steps
    betas: tuple[float, float] | None = None  # Adam betas
    weight_decay: float = 0.0  # decoupled (AdamW) or L2 (Adam) weight decay
    grad_clip: float | None = None  # max global grad norm; 0 = no clipping
    ema_decay: float = 0.999  # EMA decay (ramped up from 0 over the first steps)
    precision: str = "fp32"  # "fp32" | "bf16" (autocast on CUDA only)
    seed: int = 0  # data order, noise, dropout and augmentation all follow from it
    device: str | None = None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu
    num_workers: int = 0  # DataLoader worker processes
    num_repeats: int = 100  # each clip appears this many times per data-set pass
    log_every: int = 10  # JSONL log line every N steps
    ckpt_every: int = 500  # checkpoint every N steps (and at the end / on SIGTERM)
    sample_every: int = 0  # preview every N steps (0 = never)
    progress: bool = True  # tqdm bar on rank 0
    init_from: str | None = None  # start from the EMA weights of this run dir / checkpoint
    clip_frames: int | None = None  # frames per item (PBNet window, A2V clip; stage-2 maximum)
    # LFG (spec §5.1)
    max_gap: int | None = None  # max frame distance of a source/driving pair (None: any)
    vgg_weights: str | None = None  # torchvision-layout VGG19 state dict -> perceptual loss
    rec_weight: float = 10.0  # L1 pyramid (or VGG) weight per scale (and per VGG layer)
    equivariance_weight: float = 10.0  # weight of each equivariance term (shift, affine)
    transform_sigma: float = 0.05  # std of the random affine transform of the driving frame
    lfg_mouth_weight: float = 0.0  # not official: L1 inside the mouth box (train/flow_ae.py)
    lfg_separation_weight: float = 0.0  # not official: pushes region centres apart (losses.py)
    lfg_separation_sigma: float = 0.1  # range of that push, in [-1, 1] image coordinates
    lfg_mouth_region_weight: float = 0.0  # not official: region 0 follows the mouth box (losses.py)
    lfg_pairs: str = "random"  # "random" (official) | "mouth": half-open source, mined pair (synth)
    # PBNet (spec §5.2)
    net: str = "pose"  # which PBNet: "pose" (6-D) or "blink" (2-D)
    kl_weight: float = 0.004  # weight of the KL term
    # A2V-FDM (spec §5.3)
    lfg: str | None = None  # trained LFG: an LFG run dir, a model dir or a flow_ae component dir
    curriculum: int = 1  # 1: fixed clips, reference = first frame; 2: random length + reference
    min_frames: int = 30  # stage 2: shortest clip (the longest is clip_frames)
    a2v_reference: str | None = None  # None: the curriculum's | "open": half-open mouth (synth)
    null_cond_prob: float = 0.1  # condition dropout (classifier-free guidance)
    flow_loss_weight: float = 0.15  # weight of the x0 flow/occlusion loss
    mouth_loss_weight: float = 0.15  # weight of the mouth-region eps loss
    sample_steps: int = 10  # DDIM steps of the preview samples
    # A2V-FDM step distillation (a2v-distill; the LFG, face-location encoder and data width are
    # the teacher's)
    teacher: str | None = None  # frozen teacher: a DAWN model dir or an a2v / a2v-distill run dir
    # DDIM steps the student learns (the teacher takes 2 per student step); None: (M - 1) / 2 for
    # a teacher distilled for M steps, so rounds go 15 -> 7 -> 3 -> 1
    student_steps: int | None = None
    # DiffTalk (difftalk_spec.md §4)
    first_stage: str | None = None  # frozen VQ first stage: a DiffTalk model dir or its folder
    # Diffused Heads (diffusedheads_spec.md §4)
    faithful_lip: bool = False  # L_lip in the identity frame's mouth box (official; likely a bug)
    prediction: str = "eps"  # what the UNet learns: eps (official) or v (samples sooner when small)

    def __post_init__(self) -> None:
        stages = training_stages()
        if self.stage not in stages:
            raise ValueError(f"stage={self.stage!r} must be one of {', '.join(stages)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError(f"steps={self.steps} and grad_accum={self.grad_accum} must be >= 1")
        if self.optimizer not in (None, "adam", "adamw"):
            raise ValueError(f"optimizer={self.optimizer!r} must be 'adam' or 'adamw'")
        if self.net not in ("pose", "blink"):
            raise ValueError(f"net={self.net!r} must be 'pose' or 'blink'")
        if self.prediction not in ("eps", "v") or (
            self.prediction != "eps" and self.stage != "diffused-heads"
        ):
            raise ValueError(
                f"prediction={self.prediction!r}: only diffused-heads trains a v-predicting UNet; "
                "other stages take eps, the default"
            )
        if self.curriculum not in (1, 2):
            raise ValueError(f"curriculum={self.curriculum} must be 1 or 2")
        for name in ("lfg_pairs", "a2v_reference"):  # synthetic-only aids (data/mouth_reference.py)
            value, allowed = getattr(self, name), self.CHOICES[name]
            if value is not None and value not in allowed:
                raise ValueError(f"{name}={value!r} must be one of {', '.join(allowed)}")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ValueError(f"time_budget_min={self.time_budget_min} must be > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.student_steps is not None and self.student_steps < 1:
            raise ValueError(f"student_steps={self.student_steps} must be >= 1")
        if min(self.log_every, self.ckpt_every) < 1 or self.sample_every < 0:
            raise ValueError("log_every and ckpt_every must be >= 1, sample_every >= 0")

    def resolve(self) -> TrainConfig:
        """A copy with every ``None`` stage default filled in (idempotent)."""
        defaults = dict(STAGE_DEFAULTS.get(self.stage, GENERIC_DEFAULTS))
        if self.stage in A2V_STAGES and self.curriculum == 2:
            defaults.update(A2V_STAGE2)
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **filled)
        if (
            out.stage in A2V_STAGES
            and out.curriculum == 2
            and not 1 <= out.min_frames <= out.clip_frames
        ):
            raise ValueError(
                f"min_frames={out.min_frames} must be in [1, clip_frames={out.clip_frames}]"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig has no field(s) {unknown}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / CONFIG_FILE
        write_json(path, self.to_dict())
        return path


def model_config_for_data(preset: str, data: str | Path) -> tuple[DawnConfig, str]:
    """The preset's architecture at the data's resolution and audio width, and the audio-feature
    kind for ``model.json`` ("logmel" for log-mel sets such as the synthetic one, else "hubert").

    The pipeline computes log-mel features with ``n_mels = audio_dim``, so a model trained on the
    data's features keeps the data's width rather than the preset's.
    """
    from talkinghead.data.layout import read_manifest

    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} must be one of {sorted(PRESETS)}")
    manifest = read_manifest(data)
    if manifest.resolution % 4:
        raise ValueError(f"data resolution {manifest.resolution} must be a multiple of 4")
    base, a = PRESETS[preset], manifest.audio_dim
    cfg = dataclasses.replace(
        base,
        resolution=manifest.resolution,
        pose=dataclasses.replace(base.pose, audio_dim=a),
        blink=dataclasses.replace(base.blink, audio_dim=a),
        unet=dataclasses.replace(base.unet, audio_dim=a),
    )
    kind = "logmel" if manifest.audio_feature.startswith("logmel") else "hubert"
    return cfg, kind
