"""Score a directory of generated videos against real ones: DAWN's Table 1 in one call.

``evaluate_directory`` pairs videos by file stem, extracts per-video features (cached, see
``features.py``), and aggregates the metrics of Table 1 (FID, FVD16, FVD32, LSE-C, LSE-D, CSIM,
BAS, Blink/s) plus PSNR/SSIM for paired videos. The reference videos also get their own LSE, BAS
and Blink/s (the "GT" row of Table 1). Unreadable videos are skipped and listed. Metrics whose
network weights are absent are reported as ``needs weights`` with where to get them. The
summary's ``protocol`` says how each metric was computed (``protocol.py``); each video's row says
which face track, alignment and motion signal its numbers came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from talkinghead import files
from talkinghead.eval.features import Features, extract_features
from talkinghead.eval.media import UnreadableVideoError, list_videos, read_video
from talkinghead.eval.metrics import (
    beat_align_score,
    blinks_per_second,
    cosine_similarity,
    count_blinks,
    frechet_distance_features,
    lse_from_distances,
    psnr,
    ssim,
)
from talkinghead.eval.networks import METRIC_NETWORK, MetricNetworks, load_networks
from talkinghead.eval.options import EvalOptions
from talkinghead.eval.protocol import describe_protocol

logger = logging.getLogger(__name__)

TABLE1 = ("FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM", "BAS", "Blink/s", "PSNR", "SSIM")


@dataclass
class EvalResult:
    """``summary`` is what metrics.json holds; ``features`` (per role and stem) feed the plots."""

    summary: dict
    features: dict[str, dict[str, Features]] = field(default_factory=dict)


def _value(x: float, n: int) -> dict:
    return {"value": None if not np.isfinite(x) else round(float(x), 6), "n": n}


def _mean_entry(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return {"status": "no data"}
    return _value(float(np.mean(vals)), len(vals))


def _per_video(feats: Features, vshift: int) -> dict:
    fps, frames = float(feats["meta"][0]), int(feats["meta"][1])
    row: dict = {
        "frames": frames,
        "fps": round(fps, 3),
        "audio_seconds": round(float(feats["meta"][4]), 3),
    }
    for key in ("face_detector", "motion_source", "sync_crop", "csim_alignment"):
        if key in feats:
            row[key] = str(feats[key])
    row["blinks"] = len(count_blinks(feats["openness"]))
    row["Blink/s"] = blinks_per_second(feats["openness"], fps)
    row["BAS"] = (
        beat_align_score(feats["audio_beats"], feats["motion_beats"])
        if feats["meta"][4] > 0
        else None
    )
    dists = feats.get("sync_dists")
    if dists is not None and len(dists):
        lse = lse_from_distances(torch.from_numpy(dists), vshift)
        row.update({"LSE-C": lse["lse_c"], "LSE-D": lse["lse_d"], "sync_offset": lse["offset"]})
    return row


def _frechet(gen: list[np.ndarray], ref: list[np.ndarray], label: str) -> dict:
    a = np.concatenate(gen) if gen else np.zeros((0, 1))
    b = np.concatenate(ref) if ref else np.zeros((0, 1))
    if len(a) < 2 or len(b) < 2:
        return {"status": f"too few {label} (need >= 2 per set, got {len(a)} and {len(b)})"}
    return _value(frechet_distance_features(a, b), len(a))


def _pair_quality(gen: Path, ref: Path) -> tuple[float, float]:
    g, _ = read_video(gen)
    r, _ = read_video(ref)
    n = min(len(g), len(r))
    if g.shape[1:] != r.shape[1:]:
        import cv2  # only needed when sizes differ

        r = np.stack(
            [cv2.resize(f, (g.shape[2], g.shape[1]), interpolation=cv2.INTER_AREA) for f in r[:n]]
        )
    gt = torch.from_numpy(g[:n]).permute(0, 3, 1, 2)
    rt = torch.from_numpy(r[:n]).permute(0, 3, 1, 2)
    return psnr(gt, rt), ssim(gt, rt)


def evaluate_directory(
    generated_dir: str | Path,
    reference_dir: str | Path | None = None,
    *,
    out_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    options: EvalOptions | None = None,
    networks: MetricNetworks | None = None,
) -> EvalResult:
    """Compute Table 1 metrics for ``generated_dir`` (paired by stem with ``reference_dir``).

    Args:
        out_dir: where the feature cache lives (``out_dir/cache``); None disables caching.
        networks: pre-loaded networks (tests); default loads from ``weights_dir`` / env.
    """
    options = options or EvalOptions()
    nets = networks if networks is not None else load_networks(weights_dir, device)
    gen_videos = list_videos(generated_dir)
    ref_videos = (
        {p.stem: p for p in list_videos(reference_dir)} if reference_dir is not None else {}
    )
    cache_dir = Path(out_dir) / "cache" if out_dir is not None else None
    jobs = [("generated", p) for p in gen_videos]
    jobs += [("reference", ref_videos[p.stem]) for p in gen_videos if p.stem in ref_videos]
    feats: dict[str, dict[str, Features]] = {"generated": {}, "reference": {}}
    skipped: list[dict] = []
    for role, path in tqdm(jobs, desc="eval", unit="video", disable=not options.progress):
        cache = cache_dir / f"{role}-{path.stem}.npz" if cache_dir is not None else None
        try:
            feats[role][path.stem] = extract_features(
                path,
                nets,
                cache,
                batch_size=options.batch_size,
                vshift=options.vshift,
                fid_max_frames=options.fid_max_frames,
                csim_max_frames=options.csim_max_frames,
                device=device,
            )
        except UnreadableVideoError as err:
            logger.warning("skipping %s", err)
            skipped.append({"role": role, "path": str(path), "error": str(err)})

    rows = []
    for stem, gf in feats["generated"].items():
        row = {"name": stem, **_per_video(gf, options.vshift)}
        rf = feats["reference"].get(stem)
        row["has_reference"] = rf is not None
        if "arcface" in gf:
            anchor = rf["arcface"][:1] if rf is not None and "arcface" in rf else gf["arcface"][:1]
            row["CSIM"] = float(cosine_similarity(gf["arcface"], anchor).mean())
        if rf is not None:
            row["PSNR"], row["SSIM"] = _pair_quality(
                Path(generated_dir) / _name(gen_videos, stem), ref_videos[stem]
            )
            row["reference"] = _per_video(rf, options.vshift)
        rows.append(row)

    summary = {
        "generated_dir": str(generated_dir),
        "reference_dir": None if reference_dir is None else str(reference_dir),
        "num_videos": len(rows),
        "num_paired": sum(r["has_reference"] for r in rows),
        "metrics": _aggregate(rows, feats, nets),
        "reference_metrics": _aggregate_reference(rows, nets),
        "videos": [_rounded(r) for r in rows],
        "skipped": skipped,
        "weights": {n: "loaded" for n in nets.models}
        | ({"face3d": "loaded"} if "face3d detector" in nets.files else {})
        | {n: e["status"] for n, e in nets.missing.items()},
        "protocol": describe_protocol(
            feats,
            nets,
            vshift=options.vshift,
            fid_max_frames=options.fid_max_frames,
            csim_max_frames=options.csim_max_frames,
        ),
    }
    return EvalResult(summary=summary, features=feats)


def _name(videos: list[Path], stem: str) -> str:
    return next(p.name for p in videos if p.stem == stem)


def _aggregate(
    rows: list[dict], feats: dict[str, dict[str, Features]], nets: MetricNetworks
) -> dict:
    gen, ref = feats["generated"], feats["reference"]
    out: dict = {}
    for metric in TABLE1:
        net = METRIC_NETWORK.get(metric)
        if net is not None and net not in nets.models:
            out[metric] = nets.missing_entry(net)
        elif metric in ("FID", "FVD16", "FVD32") and not ref:
            out[metric] = {"status": "needs reference videos (--reference)"}
        elif metric == "FID":
            out[metric] = _frechet(
                [gen[s]["inception"] for s in gen], [ref[s]["inception"] for s in ref], "frames"
            )
        elif metric in ("FVD16", "FVD32"):
            key = "i3d" + metric[3:]
            out[metric] = _frechet(
                [gen[s][key] for s in gen], [ref[s][key] for s in ref], f"{metric[3:]}-frame clips"
            )
        elif metric in ("PSNR", "SSIM") and not ref:
            out[metric] = {"status": "needs reference videos (--reference)"}
        elif metric in ("LSE-C", "LSE-D") and not any(metric in r for r in rows):
            out[metric] = {"status": "needs audio (muxed or <stem>.wav) and >= 6 frames"}
        else:
            out[metric] = _mean_entry([r.get(metric) for r in rows])
    return out


def _aggregate_reference(rows: list[dict], nets: MetricNetworks) -> dict:
    """The GT row of Table 1: LSE, BAS and Blink/s of the reference videos themselves."""
    refs = [r["reference"] for r in rows if "reference" in r]
    if not refs:
        return {}
    out = {m: _mean_entry([r.get(m) for r in refs]) for m in ("LSE-C", "LSE-D", "BAS", "Blink/s")}
    if "syncnet" not in nets.models:
        out["LSE-C"] = out["LSE-D"] = nets.missing_entry("syncnet")
    return out


def _rounded(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out[k] = _rounded(v)
        elif isinstance(v, float):
            out[k] = round(v, 6) if np.isfinite(v) else None
        else:
            out[k] = v
    return out


def write_json(summary: dict[str, Any], path: str | Path) -> None:
    """Write a metrics summary as indented JSON, atomically (NaN and infinities as null)."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, float) and not np.isfinite(x):
            return None
        return x

    files.write_json(path, clean(summary))
