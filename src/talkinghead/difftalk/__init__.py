"""DiffTalk (Shen et al., CVPR 2023): audio-driven lip-sync of a person's video by latent diffusion.

Every frame's lower face is regenerated in the latent space of LDM's VQ-f4 autoencoder, conditioned
on the frame with its mouth masked, a reference frame, 39 upper-face landmarks and a window of audio
features (difftalk_spec.md). Modules: ``configs`` (dataclasses, presets), ``conditioning`` (audio and
landmark encoders), ``networks`` (diffusers VQModel + UNet2DConditionModel), ``model_dir``,
``convert`` (official Lightning checkpoints, LDM's vq-f4), ``geometry`` (landmarks, masks,
paste-back), ``audio_windows``, ``prepare`` + ``pipeline`` (video + speech -> video), ``training``
(``build_task`` / ``export``) and ``landmarks`` (68 points for a prepared training set).

From Python::

    from talkinghead.difftalk.pipeline import DiffTalkOptions, DiffTalkPipeline
    from talkinghead.outputs import save_result

    pipe = DiffTalkPipeline.from_pretrained("difftalk-model/", face3d_dir="face3d/")
    prepared = pipe.prepare("person.mp4")                 # once per video
    result = pipe(prepared, "speech.wav", DiffTalkOptions(num_steps=200, seed=0))
    save_result(result, "dubbed.mp4", audio_path="speech.wav")
"""
