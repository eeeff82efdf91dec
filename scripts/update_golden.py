"""Regenerate tests/fixtures/tiny_pipeline_golden.json (the tiny-pipeline golden slice).

Run only after a deliberate change of what the pipeline computes, and say why in the commit:
``OMP_NUM_THREADS=1 .venv/bin/python scripts/update_golden.py``. The test that reads the file is
tests/pipelines/test_tiny_golden.py; the generation itself is tests/pipelines/tiny_golden.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # as tests/conftest.py sets it, before torch loads

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "tiny_pipeline_golden.json"


def main() -> int:
    sys.path.insert(0, str(ROOT / "tests" / "pipelines"))
    from tiny_golden import run_tiny_golden

    from talkinghead.files import atomic_write_text

    values = run_tiny_golden()
    atomic_write_text(GOLDEN, json.dumps(values, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)} ({GOLDEN.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
