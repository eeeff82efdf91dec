"""Diffused Heads (Stypułkowski et al., WACV 2024): frame-by-frame diffusion talking heads.

configs (architecture + presets), unet / audio_encoder (pure networks), sampling (the autoregressive
frame loop), official_keys + convert (official TorchScript / Lightning files -> our model directory),
alignment + pipeline (portrait + speech -> frames).
"""
