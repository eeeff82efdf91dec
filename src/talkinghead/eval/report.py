"""HTML report of an evaluation run: Table 1 summary, a row per video, inline SVG plots and the
protocol of every metric.

Plots (no plotting library needed): per video the motion speed with motion beats (its minima)
and audio beats (what BAS compares), the eye-openness curve with detected blinks (Blink/s), and
one histogram of the SyncNet audio-video offsets over all videos (a healthy model peaks at 0).
The protocol section lists the networks with their weights' sha256, crops, alignment, frame and
clip counts, and per video the face track, alignment and motion signal used.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from talkinghead.eval.evaluate import TABLE1, EvalResult
from talkinghead.eval.metrics import count_blinks, motion_speed

_W, _H, _PAD = 420, 120, 24
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def _fmt(entry: object) -> str:
    if isinstance(entry, dict):
        if entry.get("value") is not None:
            return f"{entry['value']:.4g}"
        status = entry.get("status", "n/a")
        hint = entry.get("file", "")
        return f'<span class="na" title="{html.escape(str(entry))}">{html.escape(status)}' + (
            f"<br><small>{html.escape(hint)}</small></span>" if hint else "</span>"
        )
    if isinstance(entry, float):
        return f"{entry:.4g}"
    return "-" if entry is None else html.escape(str(entry))


def _polyline(values: np.ndarray, lo: float, hi: float, color: str) -> str:
    n = len(values)
    xs = _PAD + np.arange(n) * (_W - 2 * _PAD) / max(n - 1, 1)
    ys = _H - _PAD - (values - lo) / (hi - lo or 1.0) * (_H - 2 * _PAD)
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'


def _ticks(frames: np.ndarray, n: int, color: str, top: bool) -> str:
    y0, y1 = (_PAD - 6, _PAD) if top else (_H - _PAD, _H - _PAD + 6)
    out = []
    for f in frames:
        x = _PAD + f * (_W - 2 * _PAD) / max(n - 1, 1)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y1}" stroke="{color}" stroke-width="2"/>'
        )
    return "".join(out)


def line_plot(
    title: str, curves: list[np.ndarray], marks: list[tuple[np.ndarray, str, bool]]
) -> str:
    """Inline SVG of curves (each (T,)) sharing one y range, with tick marks at frame indices."""
    if not curves or not len(curves[0]):
        return ""
    allv = np.concatenate([np.asarray(c, dtype=float) for c in curves])
    lo, hi = float(allv.min()), float(allv.max())
    n = len(curves[0])
    body = "".join(
        _polyline(np.asarray(c, float), lo, hi, _COLORS[i % 4]) for i, c in enumerate(curves)
    )
    body += "".join(_ticks(f, n, color, top) for f, color, top in marks)
    return (
        f'<svg width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="100%" height="100%" fill="#fafafa" stroke="#ccc"/>'
        f'<text x="{_PAD}" y="14" font-size="11">{html.escape(title)}</text>{body}</svg>'
    )


def histogram_svg(values: list[int], lo: int, hi: int, title: str) -> str:
    """Inline SVG bar chart of integer ``values`` over bins lo..hi."""
    bins = np.arange(lo, hi + 1)
    counts = np.array([sum(v == b for v in values) for b in bins])
    bw = (_W - 2 * _PAD) / len(bins)
    top = max(int(counts.max()), 1)
    bars = []
    for i, (b, c) in enumerate(zip(bins, counts)):
        h = c / top * (_H - 2 * _PAD)
        x = _PAD + i * bw
        bars.append(
            f'<rect x="{x:.1f}" y="{_H - _PAD - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="#1f77b4"/>'
        )
        if b % 5 == 0:
            bars.append(f'<text x="{x:.1f}" y="{_H - 8}" font-size="9">{b}</text>')
    return (
        f'<svg width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="100%" height="100%" fill="#fafafa" stroke="#ccc"/>'
        f'<text x="{_PAD}" y="14" font-size="11">{html.escape(title)}</text>{"".join(bars)}</svg>'
    )


def _video_plots(name: str, result: EvalResult) -> str:
    feats = result.features["generated"].get(name)
    if feats is None:
        return ""
    speed = motion_speed(feats["motion"])
    pose = line_plot(
        f"motion speed ({feats.get('motion_source', 'motion')}); ticks: motion beats (bottom), "
        "audio beats (top)",
        [speed],
        [(feats["motion_beats"], "#444", False), (feats["audio_beats"], "#d62728", True)],
    )
    blink = line_plot(
        "eye openness; ticks: detected blinks",
        [feats["openness"]],
        [(count_blinks(feats["openness"]), "#d62728", False)],
    )
    return pose + blink


_PROTOCOL_COLUMNS = ("face_detector", "sync_crop", "csim_alignment", "motion_source")


def _protocol_value(value: object) -> str:
    """Nested protocol entries as compact HTML: dicts as 'key: value' lines, lists one per line."""
    if isinstance(value, dict):
        return "<br>".join(
            f"<b>{html.escape(str(k))}</b>: {_protocol_value(v)}" for k, v in value.items()
        )
    if isinstance(value, list):
        return "<br>".join(_protocol_value(v) for v in value)
    return html.escape(str(value))


def _protocol_html(protocol: dict) -> str:
    rows = "".join(
        f'<tr><th>{html.escape(metric)}</th><td style="text-align:left">'
        f"{_protocol_value(entry)}</td></tr>"
        for metric, entry in protocol.items()
    )
    return f"<table>{rows}</table>"


def render_html(result: EvalResult) -> str:
    """The full report page as a string."""
    s = result.summary
    head = "".join(f"<th>{html.escape(m)}</th>" for m in TABLE1)
    gen_row = "".join(f"<td>{_fmt(s['metrics'].get(m))}</td>" for m in TABLE1)
    gt_row = "".join(f"<td>{_fmt(s['reference_metrics'].get(m, None))}</td>" for m in TABLE1)
    cols = (
        "frames",
        "fps",
        "LSE-C",
        "LSE-D",
        "sync_offset",
        "CSIM",
        "BAS",
        "Blink/s",
        "PSNR",
        "SSIM",
    )
    video_rows = []
    for row in s["videos"]:
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in cols)
        video_rows.append(
            f"<tr><td>{html.escape(row['name'])}</td>{cells}</tr>"
            f'<tr><td colspan="{len(cols) + 1}">{_video_plots(row["name"], result)}</td></tr>'
        )
    offsets = [r["sync_offset"] for r in s["videos"] if r.get("sync_offset") is not None]
    hist = (
        histogram_svg(offsets, -15, 15, "SyncNet AV offset (frames) over videos")
        if offsets
        else f"<p class='na'>No sync offsets: LSE {_fmt(s['metrics'].get('LSE-C'))}</p>"
    )
    skipped = "".join(
        f"<li>{html.escape(x['path'])}: {html.escape(x['error'])}</li>" for x in s["skipped"]
    )
    protocol = _protocol_html(s["protocol"])
    video_protocol = "".join(
        f"<tr><td>{html.escape(r['name'])}</td>"
        + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in _PROTOCOL_COLUMNS)
        + "</tr>"
        for r in s["videos"]
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>talkinghead eval</title>
<style>body{{font-family:sans-serif;margin:20px}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:center}} .na{{color:#a60}}</style>
</head><body><h1>talkinghead eval</h1>
<p>generated: {html.escape(s["generated_dir"])} &middot; reference: {html.escape(str(s["reference_dir"]))}
&middot; {s["num_videos"]} videos ({s["num_paired"]} paired)</p>
<h2>Table 1 metrics</h2><table><tr><th></th>{head}</tr><tr><th>generated</th>{gen_row}</tr>
<tr><th>reference (GT)</th>{gt_row}</tr></table>
<h2>Sync offsets</h2>{hist}
<h2>Per video</h2><table><tr><th>name</th>{"".join(f"<th>{c}</th>" for c in cols)}</tr>{"".join(video_rows)}</table>
<h2>Skipped videos</h2><ul>{skipped or "<li>none</li>"}</ul>
<h2>Protocol</h2>{protocol}
<h3>Per video (generated)</h3><table><tr><th>name</th>{"".join(f"<th>{c}</th>" for c in _PROTOCOL_COLUMNS)}</tr>
{video_protocol}</table></body></html>
"""


def write_report(result: EvalResult, path: str | Path) -> None:
    """Write ``render_html(result)`` to ``path``."""
    Path(path).write_text(render_html(result), encoding="utf-8")
