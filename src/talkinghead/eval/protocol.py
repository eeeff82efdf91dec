"""The protocol section of an evaluation report: how every metric was computed on this run.

Two runs compare, and a paper's table can be matched, only when the inputs of the networks were
prepared the same way. ``describe_protocol`` states per metric the network and its weights (file
and sha256), how frames were chosen, cropped and aligned, the counts that went into the number
(frames for FID, clips for FVD, videos per face-track kind for LSE, ...), and where this run
differs from the reference implementation.
"""

from __future__ import annotations

from collections import Counter

from talkinghead.eval.face_track import (
    CROP_SCALE,
    MIN_FACE_SIZE,
    MIN_TRACK,
    NUM_FAILED_DET,
    SMOOTH_KERNEL,
    TRACK_IOU,
)
from talkinghead.eval.features import Features
from talkinghead.eval.networks import MetricNetworks

Roles = dict[str, dict[str, Features]]


def _weights(nets: MetricNetworks, name: str, what: str) -> dict:
    if name in nets.files:
        return {"network": what, **nets.files[name]}
    status = nets.missing.get(name, {}).get("status", "not loaded")
    if name in nets.models:
        status = "loaded (no file: passed in)"
    return {"network": what, "status": status}


def _tally(feats: Roles, key: str, cut: str | None = None) -> dict[str, dict[str, int]] | str:
    """Per role, how many videos had each value of the string feature ``key`` ("none" if none)."""
    out = {}
    for role, videos in feats.items():
        kinds = [str(f[key]) for f in videos.values() if key in f]
        if kinds:
            out[role] = dict(Counter(k.split(cut)[0] if cut else k for k in kinds))
    return out or "none (not computed)"


def _count(feats: Roles, key: str) -> dict[str, dict[str, int]] | str:
    """Per role, the number of videos with ``key`` and of its rows (frames, clips) in total."""
    out = {}
    for role, videos in feats.items():
        rows = [len(f[key]) for f in videos.values() if key in f]
        if rows:
            out[role] = {"videos": len(rows), key: sum(rows)}
    return out or "none (not computed)"


def _frechet_entries(nets: MetricNetworks, feats: Roles, fid_max_frames: int | None) -> dict:
    frames = (
        "every frame of every video"
        if fid_max_frames is None
        else f"{fid_max_frames} evenly spaced frames per video (every frame of a shorter one)"
    )
    out = {
        "FID": {
            "weights": [_weights(nets, "inception", "InceptionV3 of pytorch-fid (TF 2015-12-05)")],
            "input": "whole RGB frames, bilinear resize to 299x299 on floats, scaled to [-1, 1]; "
            "2048-d pool3 features (pytorch-fid)",
            "frames": frames,
            "counts": _count(feats, "inception"),
        }
    }
    for length in (16, 32):
        out[f"FVD{length}"] = {
            "weights": [_weights(nets, "i3d", "I3D Kinetics-400 TorchScript (StyleGAN-V)")],
            "input": "uint8 frames scaled to [-1, 1], resized to 224 inside the model; 400-d "
            "features",
            "clips": f"non-overlapping {length}-frame clips from frame 0 at the video's own frame "
            f"rate, the remainder dropped",
            "counts": _count(feats, f"i3d{length}"),
        }
    return out


def _sync_entry(nets: MetricNetworks, feats: Roles, vshift: int) -> dict:
    return {
        "weights": [
            _weights(nets, "syncnet", "SyncNet v2 (syncnet_python)"),
            _weights(nets, "s3fd", "S3FD face detector (syncnet_python)"),
        ],
        "input": (
            "frames at 25 fps (nearest frame); syncnet_python's face track: S3FD on the RGB frame "
            f"at scale 0.25, confidence > 0.9, IoU > {TRACK_IOU} tracking with up to "
            f"{NUM_FAILED_DET} missed frames, more than {MIN_TRACK} detections (one less than the "
            f"clip for shorter clips), mean side > {MIN_FACE_SIZE} px; centre and half side median "
            f"filtered over {SMOOTH_KERNEL} frames; crop scale {CROP_SCALE} (brows down, grey-110 "
            "padding), 224x224 bilinear, BGR; the longest track is scored; audio cut to the "
            "track, 16 kHz mono rounded to int16, 13 MFCCs (python_speech_features)"
        ),
        "scoring": f"offsets -{vshift}..+{vshift} frames; LSE-D = min of the frame-averaged "
        "distance, LSE-C = its median - min (syncnet_python)",
        "differs": "no JPEG/XVID re-encoding of frames, no scene-cut detection; without S3FD "
        "weights or track the face-analysis boxes go through the same crop and smoothing",
        "face_tracks": _tally(feats, "sync_crop", ", frames"),
    }


def _csim_entry(nets: MetricNetworks, feats: Roles, csim_max_frames: int) -> dict:
    return {
        "weights": [_weights(nets, "arcface", "ArcFace IResNet-100 (insightface arcface_torch)")],
        "input": "5 landmarks (eye centres, nose tip, mouth corners of the 3DDFA 68 points) "
        "mapped to insightface's 112x112 ArcFace template by the least-squares similarity, "
        "cv2.warpAffine on uint8 (black border), RGB scaled to [-1, 1]",
        "frames": f"{csim_max_frames} evenly spaced frames per video (all of a shorter one)",
        "anchor": "the first frame of the paired reference video (the generated video's own "
        "first frame without one); CSIM = mean cosine similarity to it",
        "alignment": _tally(feats, "csim_alignment"),
    }


def describe_protocol(
    feats: Roles,
    nets: MetricNetworks,
    *,
    vshift: int,
    fid_max_frames: int | None,
    csim_max_frames: int,
) -> dict[str, dict]:
    """The protocol of every metric of a run (see module docstring), JSON-ready."""
    out = _frechet_entries(nets, feats, fid_max_frames)
    out["LSE-C/LSE-D"] = _sync_entry(nets, feats, vshift)
    out["CSIM"] = _csim_entry(nets, feats, csim_max_frames)
    out["BAS"] = {
        "motion": _tally(feats, "motion_source"),
        "motion_beats": "local minima of the motion speed smoothed by a Gaussian of sigma 5 "
        "frames; with several joints (landmarks) the mean over joints of each joint's speed "
        "(Bailando calc_db)",
        "audio_beats": "spectral-flux onset peaks at least 0.2 s apart, at the video frame rate "
        "(Bailando takes librosa beats of music; speech has no tempo)",
        "score": "mean over audio beats of exp(-d^2 / (2 * 3^2)), d = frames to the nearest "
        "motion beat (Bailando BA)",
    }
    out["Blink/s"] = {
        "signal": _tally(feats, "openness_source"),
        "blinks": "dips below 0.75 x the median of the eye signal, merged when fewer than 3 "
        "frames apart; per second of video",
    }
    out["PSNR/SSIM"] = {
        "input": "every paired frame (the shorter length), the reference resized to the generated "
        "size with INTER_AREA when sizes differ; SSIM: 11x11 Gaussian window, sigma 1.5, per "
        "channel on 0-255",
    }
    out["faces"] = {
        "detector": _tally(feats, "face_detector"),
        "weights": [
            _weights(nets, "face3d detector", "FaceBoxes (3DDFA_V2)"),
            _weights(nets, "face3d landmarks", "3DDFA MobileNet 68-landmark head"),
        ],
    }
    if "face3d" in nets.missing:
        for w in out["faces"]["weights"]:
            w["status"] = nets.missing["face3d"]["status"]
    return out
