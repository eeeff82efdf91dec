"""DiffTalk (Shen et al., CVPR 2023): audio-driven lip-sync of a person's video by latent diffusion.

Modules: ``configs`` (dataclasses, presets), ``conditioning`` (audio / landmark encoders),
``networks`` (diffusers VQModel + UNet2DConditionModel builders), ``model_dir`` (our model
directory), ``convert`` (official Lightning checkpoints), ``geometry`` (landmarks and masks),
``audio`` (feature windows), ``pipeline`` (video + speech -> video).
"""
