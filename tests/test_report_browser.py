"""The report renders in a real browser: headless Chromium, where one is installed (skipped otherwise)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.build import build_report

SMOKE = Path(__file__).parent / "data" / "smoke_results.json"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-figures", ok + "/" + imgs.length);
});
</script>"""


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def test_every_figure_loads_in_headless_chromium(tmp_path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)})")
    page = build_report([SMOKE], tmp_path / "index.html")
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'data-figures="(\d+)/(\d+)"', proc.stdout)
    assert match, f"the page did not finish loading in {browser}: {proc.stderr[-1500:]}"
    loaded, total = map(int, match.groups())
    assert total > 0 and loaded == total, f"{loaded} of {total} figures loaded"
