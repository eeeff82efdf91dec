"""Portrait analysis: face box, square face crop, head pose, eye openness and face-location bbox.

Re-implements DAWN's initial-state extraction (dawn_spec.md §1.1; used as in §1.4 steps 1 and 6)
without Cython, ONNX or the BFM file:

1. Detection: FaceBoxes (``models/faceboxes.py``) on the BGR image downscaled to h <= 720,
   w <= 1080; scores > 0.05, greedy NMS at IoU 0.3, keep score > 0.2. Of several faces we use the
   **largest** for everything (the official code mixes the last face's pose with the first face's
   eyes and bbox, §7 item 4). Without 3DDFA weights, OpenCV's bundled Haar cascade finds the box
   (OpenCV >= 5 no longer bundles it; then a centred face is assumed, with a warning).
2. Pose: the 3DDFA MobileNet (``models/face_regressor.py``) on the 120x120 ROI crop gives 62 params;
   ``P = param[:12].reshape(3, 4)`` -> ``[yaw, pitch, roll (deg), s, tx, ty]`` exactly like the
   official ``get_pose`` (the 3DDFA convention the DAWN checkpoints were trained on).
3. Eye openness ``[left, right]`` = vertical / horizontal eye-landmark distance on 68 landmarks
   (left: |L43-L47| / |L45-L42|, right: |L37-L41| / |L39-L36|, 0-based). Faithful note: the
   official run computes this on dense-mesh vertices 36..47 by mistake (§7 item 3), a meaningless
   number we do not reproduce. Our landmarks, best first:
   * ``bfm_path`` given: the 68 sparse 3DMM landmarks of 3DDFA (3-D, the older DAWN extractor's
     definition), from a user-supplied ``bfm_noneck_v3`` (.npz with u/w_shp/w_exp/keypoints, or
     the original .pkl, read by ``safe_pickle`` as plain data only);
   * otherwise the regressor checkpoint's auxiliary 68-point 2-D head (``fc_lm``, trained with
     3DDFA_V2 but unused there): the same landmark definition without depth, so ratios differ
     slightly from the 3-D ones for turned heads;
   * no 3DDFA weights: the official fallback ``[0.3, 0.3]``.
4. Face bbox ``[x_min, x_max, y_min, y_max, H, W]`` in the **cropped** image's pixels. The official
   value is the dense-mesh extent (ear to ear, brow-top to chin). We take the detector box, which
   already spans forehead to chin, widened by ``BBOX_SCALE`` (1.1) about its centre to reach the
   mesh's cheek extent, clipped to the crop. Only its ratios to H, W matter (the mask is built at
   the model resolution, §1.4 step 6).
5. Crop: DAWN expects a face-centred square (its examples are square portraits where the face box
   is about 1/1.7 of the side). ``face/crop.py``'s ``square_crop_box`` reproduces that framing for any photo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from talkinghead.face.crop import CROP_MARGIN, CROP_SHIFT, face_bbox_in_crop, square_crop_box
from talkinghead.face.faceboxes import BGR_MEAN, FaceBoxes, decode_boxes, nms, prior_boxes
from talkinghead.face.pose_regressor import FaceRegressor, clean_state_dict, load_face_regressor
from talkinghead.media.image import rgb_to_bgr
from talkinghead.safe_pickle import load_data_pickle

logger = logging.getLogger(__name__)

DETECT_MAX_HEIGHT, DETECT_MAX_WIDTH = 720, 1080  # FaceBoxes input is downscaled to fit these
CONFIDENCE_THRESHOLD = 0.05  # candidate boxes before NMS
NMS_IOU = 0.3  # greedy NMS overlap threshold
TOP_K, KEEP_TOP_K = 5000, 750  # candidates before / after NMS
SCORE_THRESHOLD = 0.2  # DAWN's vis_thres: final detections
ROI_SCALE, ROI_SHIFT = 1.58, 0.14  # 3DDFA ROI: side and downward shift relative to mean box side
REGRESSOR_SIZE = 120  # 3DDFA input side in pixels
NEUTRAL_POSE = (0.0, 0.0, 0.0, 4.79e-4, 56.5, 64.9)  # official fallback init pose
DEFAULT_EYE = (0.3, 0.3)  # official fallback eye ratios
CHECKPOINTS = ("mb1_120x120.pth", "mb05_120x120.pth")  # preference order in from_dir
DETECTOR_FILE = "FaceBoxesProd.pth"
PARAM_STATS = ("param_mean_std_62d_120x120.npz", "param_mean_std_62d_120x120.pkl")
# 0-based 68-landmark indices: (upper lid, lower lid, corner, corner) per eye
_LEFT_EYE, _RIGHT_EYE = (43, 47, 45, 42), (37, 41, 39, 36)
_HAAR_FILE = "haarcascade_frontalface_default.xml"


class FaceNotFoundError(ValueError):
    """No face was detected in the portrait."""


@dataclass(frozen=True)
class FaceState:
    """Everything DAWN needs from the source portrait.

    Attributes:
        box: (5,) float ``[x0, y0, x1, y1, score]`` of the chosen face, original-image pixels.
        pose: (6,) float ``[yaw, pitch, roll (deg), scale, tx, ty]`` in the 3DDFA convention.
        eye: (2,) float eye-openness ratios ``[left, right]``.
        bbox_crop: (6,) int ``[x_min, x_max, y_min, y_max, H, W]`` of the face in the cropped image.
        crop_box: ``(x0, y0, x1, y1)`` int square crop in original pixels (may exceed the image).
        landmarks: (68, 2) float original-image pixels, or None when no landmark source was used.
        detector: ``"faceboxes"``, ``"haar"``, ``"centre"`` (no detector: centred-face guess) or
            ``"none"`` (``whole_image``).
    """

    box: np.ndarray
    pose: np.ndarray
    eye: np.ndarray
    bbox_crop: np.ndarray
    crop_box: tuple[int, int, int, int]
    landmarks: np.ndarray | None = None
    detector: str = "faceboxes"

    @classmethod
    def whole_image(cls, shape: tuple[int, int]) -> FaceState:
        """The state of an (H, W) image without a detectable face: the whole frame, official
        fallback pose and eye ratios."""
        h, w = shape
        return cls(
            box=np.array([0.0, 0.0, w, h, 0.0]),
            pose=np.array(NEUTRAL_POSE),
            eye=np.array(DEFAULT_EYE),
            bbox_crop=np.array([0, w - 1, 0, h - 1, h, w], np.int64),
            crop_box=(0, 0, w, h),
            detector="none",
        )


def largest_face(boxes: np.ndarray) -> np.ndarray:
    """boxes (N, 5) -> the (5,) row with the largest area."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))]


@torch.no_grad()
def detect_faces(detector: FaceBoxes, image_bgr: np.ndarray) -> np.ndarray:
    """FaceBoxes detections (N, 5) ``[x0, y0, x1, y1, score]`` in original pixels, best first."""
    h, w = image_bgr.shape[:2]
    scale = DETECT_MAX_HEIGHT / h if h > DETECT_MAX_HEIGHT else 1.0
    if w * scale > DETECT_MAX_WIDTH:
        scale *= DETECT_MAX_WIDTH / (w * scale)
    small = image_bgr if scale == 1.0 else cv2.resize(image_bgr, (int(w * scale), int(h * scale)))
    sh, sw = small.shape[:2]
    device = next(detector.parameters()).device
    x = torch.from_numpy(small.astype(np.float32) - np.asarray(BGR_MEAN, np.float32))
    loc, scores = detector(x.permute(2, 0, 1)[None].to(device))
    boxes = decode_boxes(loc[0].float().cpu(), prior_boxes(sh, sw))
    boxes = boxes * torch.tensor([sw, sh, sw, sh]) / scale  # back to original pixels
    scores = scores[0].float().cpu()
    keep = scores > CONFIDENCE_THRESHOLD
    boxes, scores = boxes[keep], scores[keep]
    order = scores.argsort(descending=True)[:TOP_K]
    boxes, scores = boxes[order], scores[order]
    kept = nms(boxes, scores, NMS_IOU)[:KEEP_TOP_K]
    dets = torch.cat([boxes[kept], scores[kept, None]], dim=1).numpy()
    return dets[dets[:, 4] > SCORE_THRESHOLD]


def haar_available() -> bool:
    """Whether this OpenCV ships the Haar cascade (OpenCV 5 moved it to opencv-contrib)."""
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(cv2, "CascadeClassifier"):
        return False
    return (Path(data.haarcascades) / _HAAR_FILE).is_file()


def haar_detect(image_rgb: np.ndarray) -> np.ndarray:
    """OpenCV frontal-face Haar cascade; (N, 5) boxes with score 1 (the cascade has none).

    Without a bundled cascade (OpenCV >= 5) the face is assumed centred, as in DAWN's example
    portraits: one box of side min(H, W) / ``CROP_MARGIN`` at the image centre.
    """
    h, w = image_rgb.shape[:2]
    if not haar_available():
        logger.warning("OpenCV has no Haar cascade: assuming a centred face")
        side = min(h, w) / CROP_MARGIN
        cx, cy = w / 2, h / 2 + CROP_SHIFT * side
        return np.array([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 1.0]])
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / _HAAR_FILE))
    gray = cv2.equalizeHist(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
    min_side = max(24, min(h, w) // 10)  # ignore tiny background "faces"
    found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(min_side, min_side))
    if len(found) == 0:
        return np.zeros((0, 5), np.float32)
    x, y, bw, bh = np.asarray(found, np.float64).T
    # Haar boxes are tighter (brows to mouth); grow them to FaceBoxes-like forehead-to-chin boxes
    cy = y + 0.58 * bh
    w2, h2 = 1.05 * bw, 1.3 * bh
    x0 = x + bw / 2 - w2 / 2
    return np.stack([x0, cy - h2 / 2, x0 + w2, cy + h2 / 2, np.ones_like(x)], axis=1)


def roi_box_from_bbox(box: np.ndarray) -> np.ndarray:
    """3DDFA ROI (4,) ``[x0, y0, x1, y1]``: square of side int(1.58 m), centre moved down 0.14 m,
    where m is the mean side of the detector box."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    mean_side = (x1 - x0 + y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + mean_side * ROI_SHIFT
    side = int(mean_side * ROI_SCALE)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_zero_pad(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Crop ``box`` (rounded to ints) from (H, W, C) ``image``; outside pixels are zero."""
    sx, sy, ex, ey = (round(float(v)) for v in box[:4])
    h, w = image.shape[:2]
    out = np.zeros((ey - sy, ex - sx, *image.shape[2:]), image.dtype)
    x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if x1 > x0 and y1 > y0:
        out[y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[y0:y1, x0:x1]
    return out


def pose_from_params(param: np.ndarray) -> np.ndarray:
    """3DDFA params (>= 12,) -> (6,) ``[yaw, pitch, roll (deg), s, tx, ty]`` (official get_pose)."""
    p = np.asarray(param[:12], np.float64).reshape(3, 4)
    n1, n2 = np.linalg.norm(p[0, :3]), np.linalg.norm(p[1, :3])
    r1, r2 = p[0, :3] / n1, p[1, :3] / n2
    rot = np.stack([r1, r2, np.cross(r1, r2)])
    if rot[2, 0] > 0.998:  # gimbal lock: 3DDFA's matrix2angle branches
        x, y, z = np.pi / 2, np.arctan2(-rot[0, 1], -rot[0, 2]), 0.0
    elif rot[2, 0] < -0.998:
        x, y, z = -np.pi / 2, np.arctan2(rot[0, 1], rot[0, 2]), 0.0
    else:
        x = np.arcsin(rot[2, 0])
        y = np.arctan2(rot[2, 1] / np.cos(x), rot[2, 2] / np.cos(x))
        z = np.arctan2(rot[1, 0] / np.cos(x), rot[0, 0] / np.cos(x))
    return np.array([*np.degrees([x, y, z]), (n1 + n2) / 2, p[0, 3], p[1, 3]])


def eye_ratios(landmarks: np.ndarray) -> np.ndarray:
    """landmarks (68, 2 or 3) -> (2,) ``[left, right]`` eye openness (vertical / corner distance)."""
    if landmarks.shape[0] != 68:
        raise ValueError(f"expected 68 landmarks, got {landmarks.shape[0]}")

    def ratio(top: int, bottom: int, a: int, b: int) -> float:
        width = np.linalg.norm(landmarks[a] - landmarks[b])
        return float(np.linalg.norm(landmarks[top] - landmarks[bottom]) / max(width, 1e-6))

    return np.array([ratio(*_LEFT_EYE), ratio(*_RIGHT_EYE)])


def load_bfm_keypoints(path: str | Path, shape_dim: int = 40, exp_dim: int = 10) -> dict:
    """The 68-landmark rows of a 3DDFA BFM: ``u (204,)``, ``w_shp (204, 40)``, ``w_exp (204, 10)``.

    ``path``: ``bfm_noneck_v3`` as .npz (arrays u, w_shp, w_exp, keypoints) or the original .pkl
    (a pickled dict of arrays, read by ``safe_pickle.load_data_pickle``: plain data only, no code).
    ``keypoints`` index the flattened (x, y, z)-interleaved vertex array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BFM file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as data:
            bfm = {k: data[k] for k in ("u", "w_shp", "w_exp", "keypoints")}
    else:
        bfm = load_data_pickle(path)
    idx = np.asarray(bfm["keypoints"]).astype(np.int64).ravel()
    if idx.size != 204:
        raise ValueError(f"BFM keypoints must index 68 x 3 values, got {idx.size}")
    return {
        "u": np.asarray(bfm["u"], np.float64).ravel()[idx],
        "w_shp": np.asarray(bfm["w_shp"], np.float64)[idx, :shape_dim],
        "w_exp": np.asarray(bfm["w_exp"], np.float64)[idx, :exp_dim],
    }


def bfm_landmarks(param: np.ndarray, bfm: dict, roi: np.ndarray) -> np.ndarray:
    """3DDFA sparse reconstruction + similar_transform -> (68, 3) landmarks in image pixels."""
    p = np.asarray(param, np.float64)
    cam = p[:12].reshape(3, 4)
    n_shp, n_exp = bfm["w_shp"].shape[1], bfm["w_exp"].shape[1]
    flat = (
        bfm["u"]
        + bfm["w_shp"] @ p[12 : 12 + n_shp]
        + bfm["w_exp"] @ p[12 + n_shp : 12 + n_shp + n_exp]
    )
    pts = cam[:, :3] @ flat.reshape(-1, 3).T + cam[:, 3:]  # (3, 68), 120x120 crop space
    pts[0] -= 1
    pts[2] -= 1
    pts[1] = REGRESSOR_SIZE - pts[1]
    sx, sy = (roi[2] - roi[0]) / REGRESSOR_SIZE, (roi[3] - roi[1]) / REGRESSOR_SIZE
    out = np.stack([pts[0] * sx + roi[0], pts[1] * sy + roi[1], pts[2] * (sx + sy) / 2], axis=1)
    out[:, 2] -= out[:, 2].min()
    return out


class FaceAnalyzer:
    """Portrait -> ``FaceState`` (box, pose, eye, bbox, crop), caching the two small networks.

    Args:
        face3d_dir: folder with the 3DDFA_V2 assets (see ``from_dir``), or None for the weight-free
            fallback (Haar cascade box, neutral pose, default eyes; logs a warning).
        device: where the networks run.
        bfm_path: optional user-supplied ``bfm_noneck_v3`` (.npz or .pkl) for 3-D eye landmarks.
        crop_margin: ``square_crop_box`` margin.
    """

    def __init__(
        self,
        face3d_dir: str | Path | None,
        device: str | torch.device = "cpu",
        *,
        bfm_path: str | Path | None = None,
        crop_margin: float = CROP_MARGIN,
    ) -> None:
        self.device = torch.device(device)
        self.crop_margin = crop_margin
        self.detector: FaceBoxes | None = None
        self.regressor: FaceRegressor | None = None
        self.param_mean = self.param_std = np.zeros(0)
        if face3d_dir is not None:
            self._load(Path(face3d_dir))
        else:
            logger.warning(
                "no face3d weights given: using OpenCV's Haar cascade, a neutral head pose and "
                "default eye ratios; pass the 3DDFA_V2 folder for faithful initial states"
            )
        self.bfm = load_bfm_keypoints(bfm_path) if bfm_path is not None else None

    @classmethod
    def from_dir(
        cls, path: str | Path, device: str | torch.device = "cpu", **kwargs
    ) -> FaceAnalyzer:
        """Build from a folder holding ``FaceBoxesProd.pth``, ``mb1_120x120.pth`` or
        ``mb05_120x120.pth`` and ``param_mean_std_62d_120x120.npz`` (or ``.pkl``)."""
        return cls(Path(path), device, **kwargs)

    def _load(self, folder: Path) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(f"face3d folder {folder} does not exist")
        regressor_file = next((folder / n for n in CHECKPOINTS if (folder / n).is_file()), None)
        stats_file = next((folder / n for n in PARAM_STATS if (folder / n).is_file()), None)
        missing = [
            what
            for what, found in (
                (" or ".join(CHECKPOINTS), regressor_file),
                (DETECTOR_FILE, (folder / DETECTOR_FILE).is_file()),
                (" or ".join(PARAM_STATS), stats_file),
            )
            if not found
        ]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} (3DDFA_V2 assets)")
        assert regressor_file is not None and stats_file is not None
        sd = torch.load(folder / DETECTOR_FILE, map_location="cpu", weights_only=True)
        with torch.device("meta"):
            detector = FaceBoxes()
        detector.load_state_dict(sd, strict=True, assign=True)
        self.detector = detector.eval().to(self.device)
        checkpoint = torch.load(regressor_file, map_location="cpu", weights_only=True)
        self.regressor = load_face_regressor(clean_state_dict(checkpoint)).to(self.device)
        if stats_file.suffix == ".npz":
            with np.load(stats_file) as stats:
                mean, std = stats["mean"], stats["std"]
        else:
            stats = load_data_pickle(stats_file)  # the official 3DDFA_V2 asset
            mean, std = stats["mean"], stats["std"]
        self.param_mean = np.asarray(mean, np.float64).ravel()
        self.param_std = np.asarray(std, np.float64).ravel()

    def _detector_name(self) -> str:
        if self.detector is not None:
            return "faceboxes"
        return "haar" if haar_available() else "centre"

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """All faces (N, 5) ``[x0, y0, x1, y1, score]`` in pixels (FaceBoxes, else Haar)."""
        if self.detector is None:
            return haar_detect(image_rgb)
        return detect_faces(self.detector, rgb_to_bgr(image_rgb))

    @torch.no_grad()
    def regress(
        self, image_bgr: np.ndarray, box: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """3DDFA on the ROI of ``box`` -> (params (62,), 2-D landmarks (68, 2) pixels, roi (4,))."""
        assert self.regressor is not None
        roi = roi_box_from_bbox(box)
        crop = crop_zero_pad(image_bgr, roi)
        crop = cv2.resize(crop, (REGRESSOR_SIZE, REGRESSOR_SIZE), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy((crop.astype(np.float32) - 127.5) / 128.0).permute(2, 0, 1)[None]
        raw, lm = self.regressor(x.to(self.device))
        params = raw[0].double().cpu().numpy() * self.param_std + self.param_mean
        # the fc_lm head predicts x (first 68) then y (last 68) in [-1, 1] over the ROI crop
        lm = lm[0].double().cpu().numpy().reshape(2, -1).T
        landmarks = roi[:2] + (lm + 1) / 2 * (roi[2:] - roi[:2])
        return params, landmarks, roi

    def analyze(self, image_rgb: np.ndarray, *, name: str = "the image") -> FaceState:
        """(H, W, 3) uint8 RGB portrait -> ``FaceState`` of its largest face.

        ``name`` (e.g. the file path) only appears in the error message.

        Raises:
            FaceNotFoundError: no face was detected.
        """
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}"
            )
        boxes = self.detect(image_rgb)
        if len(boxes) == 0:
            raise FaceNotFoundError(
                f"no face found in {name}: use a photo with a clearly visible, roughly frontal "
                "face, or pass --no-crop to animate the image as it is"
            )
        box = largest_face(boxes).astype(np.float64)
        crop_box = square_crop_box(box, image_rgb.shape[:2], self.crop_margin)
        landmarks = None
        pose, eye = np.array(NEUTRAL_POSE), np.array(DEFAULT_EYE)
        if self.regressor is not None:
            image_bgr = rgb_to_bgr(image_rgb)
            params, landmarks, roi = self.regress(image_bgr, box)
            pose = pose_from_params(params)
            eye = eye_ratios(bfm_landmarks(params, self.bfm, roi) if self.bfm else landmarks)
        return FaceState(
            box=box,
            pose=pose,
            eye=eye,
            bbox_crop=face_bbox_in_crop(box, crop_box),
            crop_box=crop_box,
            landmarks=landmarks,
            detector=self._detector_name(),
        )
