"""Maintenance: write tests/fixtures/official_keys/*.json from the official key listings.

Reads ``dawn_keys_{128,256}.txt`` (every state_dict key, shape and dtype of the official checkpoints,
built from the reference code; dawn_spec.md §3) and writes one JSON inventory per official file:
``{"file": <official file name>, "state_dicts": {<top-level key or "" for a bare dict>: {key: [shape, dtype]}}}``.
No weights are involved. The conversion tests build fake official state dicts from these inventories.

Usage: python scripts/make_key_inventories.py [REFERENCE_DIR] [OUT_DIR]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference"
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "official_keys"
LINE = re.compile(r"^(?P<group>[^/\s]+)/(?P<key>\S+) \((?P<shape>[0-9, ]*)\) (?P<dtype>\w+)$")

# official file -> the listing groups it holds ("" = the file is a bare state dict of that group)
FILES: dict[int, dict[str, dict[str, str]]] = {
    128: {
        "LFG_128_1000ep.pth": {
            "generator": "generator",
            "region_predictor": "region_predictor",
            "bg_predictor": "bg_predictor",
        },
        "DAWN_128.pth": {"diffusion": "diffusion"},
        "pbnet/pose/checkpoint_40000.pth.tar": {"": "pbnet_pose"},
        "pbnet/blink/checkpoint_95000.pth.tar": {"": "pbnet_blink"},
    },
    256: {
        "LFG_256_400ep.pth": {
            "generator": "generator",
            "region_predictor": "region_predictor",
            "bg_predictor": "bg_predictor",
        },
        "DAWN_256.pth": {"diffusion": "diffusion"},
    },
}


def parse_listing(path: Path) -> dict[str, dict[str, list]]:
    """group -> key -> [shape, dtype]; comment lines are skipped."""
    groups: dict[str, dict[str, list]] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if m is None:
            raise ValueError(f"{path.name}: cannot parse line {line!r}")
        shape = [int(s) for s in m["shape"].replace(" ", "").split(",") if s]
        groups.setdefault(m["group"], {})[m["key"]] = [shape, m["dtype"]]
    return groups


def main(argv: list[str]) -> None:
    reference = Path(argv[0]) if argv else DEFAULT_REFERENCE
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    for resolution, files in FILES.items():
        groups = parse_listing(reference / f"dawn_keys_{resolution}.txt")
        for name, layout in files.items():
            inventory = {
                "file": name,
                "source": f"dawn_keys_{resolution}.txt",
                "state_dicts": {top: groups[group] for top, group in layout.items()},
            }
            # pbnet/pose/checkpoint_40000.pth.tar -> pbnet_pose.json; DAWN_128.pth -> DAWN_128.json
            stem = "_".join(name.split("/")[:2]) if "/" in name else name.split(".")[0]
            (out / f"{stem}.json").write_text(_dumps(inventory))


def _dumps(inventory: dict) -> str:
    """JSON with one tensor per line, so diffs of the inventories read like the listings."""
    lines = ["{", f'"file": {json.dumps(inventory["file"])},']
    lines.append(f'"source": {json.dumps(inventory["source"])},')
    lines.append('"state_dicts": {')
    tops = list(inventory["state_dicts"].items())
    for i, (top, entries) in enumerate(tops):
        lines.append(f"{json.dumps(top)}: {{")
        items = list(entries.items())
        for j, (key, value) in enumerate(items):
            comma = "," if j < len(items) - 1 else ""
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
        lines.append("}" + ("," if i < len(tops) - 1 else ""))
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
