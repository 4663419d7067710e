"""The report renders in a real browser: headless Chromium, where one is installed (skipped otherwise;
`.ci/run` installs Debian's chromium when it can and sets ARCHBENCH_REQUIRE_BROWSER=1, so CI fails rather
than skips). The screenshot goes to ARCHBENCH_ARTIFACTS when set (CI: under its run's output directory)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.build import build_report

SMOKE = Path(__file__).parent / "data" / "smoke_results.json"
STUDIES = Path(__file__).parent / "data" / "studies_results.json"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-figures", ok + "/" + imgs.length);
  const page = document.documentElement;
  document.body.setAttribute("data-overflow", Math.max(0, page.scrollWidth - page.clientWidth));
});
</script>"""


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--window-size=1280,900", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_every_figure_loads_and_nothing_overflows_in_headless_chromium(tmp_path) -> None:
    """Every study's section (the smoke and studies records together) in a 1280-pixel-wide window: every
    figure decoded, nothing wider than the page; a screenshot of the top of the page is kept."""
    browser = _browser()
    if browser is None:
        if os.environ.get("ARCHBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ARCHBENCH_REQUIRE_BROWSER=1 but no browser found (looked for {', '.join(BROWSERS)})")
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)})")
    page = build_report([SMOKE, STUDIES], tmp_path / "index.html")
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = _chromium(browser, tmp_path / "profile", "--dump-dom", probed.as_uri())
    match = re.search(r'data-figures="(\d+)/(\d+)"', proc.stdout)
    assert match, f"the page did not finish loading in {browser}: {proc.stderr[-1500:]}"
    loaded, total = map(int, match.groups())
    assert total > 0 and loaded == total, f"{loaded} of {total} figures loaded"
    overflow = int(re.search(r'data-overflow="(\d+)"', proc.stdout).group(1))
    assert overflow == 0, f"the page is {overflow} px wider than the window"
    shots = Path(os.environ.get("ARCHBENCH_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "report-screenshot.png"
    _chromium(browser, tmp_path / "profile", f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no screenshot was written"
