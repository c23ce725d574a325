"""Headless Chromium (Debian's `chromium`): screenshot a page and find its elements' boxes.

Two runs over the same page at the same window width: one prints the DOM after a small
script has written the bounding boxes of the elements asked for (into a hidden <pre>),
one takes a full-height screenshot. Each run gets a fresh profile, no network services,
and is killed with its process group if it hangs.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

WIDTH = 1280
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]
_MEASURE = """
<script>
window.addEventListener("load", () => {
  const boxes = [...document.querySelectorAll(%s)].map((e) => {
    const b = e.getBoundingClientRect();
    return {tag: e.tagName.toLowerCase(), alt: e.getAttribute("alt") || "",
            x: b.left + window.scrollX, y: b.top + window.scrollY, w: b.width, h: b.height,
            loaded: e.tagName !== "IMG" || (e.complete && e.naturalWidth > 0)};
  });
  const out = document.createElement("pre");
  out.id = "astro-boxes";
  out.style.display = "none";
  out.textContent = JSON.stringify({boxes, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float = 120) -> str:
    binary = chromium()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="astro-chromium-") as profile:
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # so the browser's helpers can be ended together
            text=True,
        )
        try:
            out, _ = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        return out


def measure(page: Path, selector: str) -> dict[str, Any]:
    """Boxes (page coordinates) of the elements matching `selector`, and the page height."""
    probe = page.with_name(page.stem + ".probe.html")
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", _MEASURE % json.dumps(selector) + "</body>"))
    try:
        dom = _run([f"--window-size={WIDTH},900", "--dump-dom", probe.as_uri()])
    finally:
        probe.unlink()
    start = dom.index('id="astro-boxes"')
    payload = dom[dom.index(">", start) + 1 : dom.index("</pre>", start)]
    return dict(json.loads(html.unescape(payload)))


def screenshot(page: Path, height: int, out: Path) -> Path:
    _run([f"--window-size={WIDTH},{height}", f"--screenshot={out}", page.as_uri()])
    assert out.is_file(), "chromium wrote no screenshot"
    return out
