"""Head pose and eye openness read off a driving video (cross-identity reenactment, paper Fig. 3),
and the driver tracks a generation follows instead of PBNet's."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from talkinghead.dawn.motion import load_motion_file
from talkinghead.face.analysis import FaceAnalyzer, FaceNotFoundError
from talkinghead.media.video import read_video_frames, video_fps
from talkinghead.pipelines.base import ProgressCallback

logger = logging.getLogger(__name__)


def motion_from_video(
    analyzer: FaceAnalyzer,
    path: str | Path,
    fps: int = 25,
    *,
    callback: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame pose (F, 6) and eye ratios (F, 2) of the largest face, resampled to ``fps``.

    Frames where no face is found repeat the previous frame's state (the first found state is used
    for leading misses). Raises ``FaceNotFoundError`` when no frame has a face.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"driving video {path} does not exist")
    src_fps = video_fps(path)
    step = src_fps / fps
    poses: list[np.ndarray | None] = []
    eyes: list[np.ndarray | None] = []
    next_time = 0.0
    for index, frame in enumerate(read_video_frames(path)):
        if callback is not None:
            callback("driving video", index + 1, 0)  # the length is known only at the end
        # output frame k shows the source frame nearest to its time, k * step (in source frames)
        repeats = 0
        while next_time < index + 0.5:
            repeats += 1
            next_time += step
        if repeats == 0:
            continue
        try:
            state = analyzer.analyze(frame, name=f"{path.name} frame {index}")
            pose, eye = state.pose.astype(np.float32), state.eye.astype(np.float32)
        except FaceNotFoundError:
            pose = eye = None
        poses.extend([pose] * repeats)
        eyes.extend([eye] * repeats)
    first = next((i for i, p in enumerate(poses) if p is not None), None)
    if first is None:
        raise FaceNotFoundError(f"no face found in any frame of the driving video {path}")
    misses = sum(p is None for p in poses)
    if misses:
        logger.warning(
            "no face in %d of %d driving frames: holding the previous state", misses, len(poses)
        )
    pose_out, eye_out = [], []
    last_pose, last_eye = poses[first], eyes[first]
    for p, e in zip(poses, eyes):
        last_pose = p if p is not None else last_pose
        last_eye = e if e is not None else last_eye
        pose_out.append(last_pose)
        eye_out.append(last_eye)
    return np.stack(pose_out), np.stack(eye_out)


def driver_tracks(
    analyzer: FaceAnalyzer,
    pose: np.ndarray | str | Path | None,
    blink: np.ndarray | str | Path | None,
    driving_video: str | Path | None,
    fps: int,
    callback: ProgressCallback | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The absolute pose (F, 6) and eye (F, 2) tracks that replace PBNet's, None where PBNet runs.

    ``pose`` / ``blink`` (arrays or ``.npy`` paths) win over the driving video's tracks.
    """
    pose_track = load_motion_file(pose, 6) if isinstance(pose, (str, Path)) else pose
    eye_track = load_motion_file(blink, 2) if isinstance(blink, (str, Path)) else blink
    if driving_video is not None:
        drv_pose, drv_eye = motion_from_video(analyzer, driving_video, fps, callback=callback)
        pose_track = drv_pose if pose_track is None else pose_track
        eye_track = drv_eye if eye_track is None else eye_track
    return pose_track, eye_track
