"""Regenerate the README screenshot: ``make screenshot`` (not part of the tests)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.browser.dashboard_server import ROOT, chromium, voila_server  # noqa: E402


def main(out: str = "assets/dashboard.png") -> None:
    with voila_server() as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1150})
        page.goto(url)
        page.wait_for_selector(".rf-figure.js-plotly-plot", timeout=180_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ROOT / out), full_page=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
