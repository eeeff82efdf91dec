"""A real browser (Debian's chromium, driven by playwright) uses the page at /: it uploads the demo
portrait and speech, generates, waits for the video and checks that it plays.

Set ``TALKINGHEAD_SCREENSHOT=path.png`` to keep a screenshot of the finished page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from talkinghead.demo import DEMO_DIR, PORTRAIT, SPEECH

from .conftest import ServerProcess

pytestmark = pytest.mark.slow

PLAY = """async () => {
    const video = document.querySelector('#result video');
    video.muted = true;
    await video.play();
    await new Promise(resolve => setTimeout(resolve, 1000));
    return {time: video.currentTime, duration: video.duration, width: video.videoWidth,
            error: video.error ? video.error.code : null};
}"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


def test_the_page_makes_a_video_that_plays(live: ServerProcess) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            outside: list[str] = []  # the page must work offline: nothing but this server
            page.on(
                "request",
                lambda r: (
                    outside.append(r.url)
                    if not r.url.startswith((live.url, "data:", "blob:"))
                    else None
                ),
            )
            page.goto(f"{live.url}/", wait_until="networkidle")
            page.set_input_files("#portrait input[type=file]", str(DEMO_DIR / PORTRAIT))
            page.set_input_files("#speech input[type=file]", str(DEMO_DIR / SPEECH))
            steps = os.environ.get("TALKINGHEAD_SCREENSHOT_STEPS", "2")
            page.fill("#steps input[type=number]", steps)
            page.press("#steps input[type=number]", "Enter")
            page.click("#generate")
            page.wait_for_selector("#result video[src]", timeout=240_000)
            played = page.evaluate(PLAY)
            status = page.inner_text("#status")
            if os.environ.get("TALKINGHEAD_SCREENSHOT"):
                page.screenshot(path=os.environ["TALKINGHEAD_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
    assert not outside, outside
    assert played["error"] is None and played["time"] > 0, played
    assert played["duration"] == pytest.approx(5.0, abs=0.1) and played["width"] == 64
    assert status.startswith("Done: 125 frames"), status
    job_id = status.rsplit("Job ", 1)[1].strip(" .`")
    job = live.client.get(f"/v1/jobs/{job_id}").json()  # the page's job is on the API too
    assert job["state"] == "succeeded" and job["options"]["num_steps"] == int(steps)
    assert Path(live.data_dir / "jobs" / job_id / "result.mp4").is_file()
