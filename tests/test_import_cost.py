"""What the CLI and the demo import before they work: seconds of start-up that every command paid.

Building the parser reads option dataclasses only; the DAWN pipeline imports transformers only to
load HuBERT. Measured: `talkinghead --help` 4.7 s -> 2.9 s, the demo's imports 7.1 s -> about 3 s
(benchmarks/RESULTS.md run 18). Loading a model builds its networks without the meta device, whose
first operation imports torch._dynamo: 1 s more (run 24)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from talkinghead.cli import build_parser
build_parser()
parser = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "diffusers")
                or m.startswith("scipy.signal"))
import talkinghead.demo
demo = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "diffusers"))
print(repr((parser[:3], demo[:3])))
"""


def test_the_parser_and_the_demo_skip_the_heavy_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert out.strip() == "([], [])"


LOAD_PROBE = """
import sys
from talkinghead.dawn.modules import load_dawn_modules
from talkinghead.demo import DEMO_DIR
modules = load_dawn_modules(DEMO_DIR / "model")
print(sorted(m for m in sys.modules if m.startswith("torch._dynamo"))[:3])
"""


def test_loading_a_model_skips_the_compiler_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert out.strip() == "[]"
