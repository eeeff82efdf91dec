"""Head pose and eye openness read off a driving video (cross-identity reenactment, paper Fig. 3)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.face import FaceAnalyzer, FaceNotFoundError
from ..data.video import read_video_frames, video_fps

logger = logging.getLogger(__name__)


def motion_from_video(
    analyzer: FaceAnalyzer, path: str | Path, fps: int = 25, *, progress: bool = True
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
    for index, frame in enumerate(tqdm(read_video_frames(path), desc="driving video",
                                       unit="frame", disable=not progress)):
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
        logger.warning("no face in %d of %d driving frames: holding the previous state", misses, len(poses))
    pose_out, eye_out = [], []
    last_pose, last_eye = poses[first], eyes[first]
    for p, e in zip(poses, eyes):
        last_pose = p if p is not None else last_pose
        last_eye = e if e is not None else last_eye
        pose_out.append(last_pose)
        eye_out.append(last_eye)
    return np.stack(pose_out), np.stack(eye_out)
