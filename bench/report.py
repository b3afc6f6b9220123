"""How big the report of an artifact is and how fast it builds and opens.

    python -m bench.report ARTIFACTS [--base OLD] [--out report.html] [--screenshot shot.png]

Builds the report (`prepro.load(ARTIFACTS).report(...)`, timed), then opens it in
headless Chromium (Debian's, via Playwright) from disk and prints the time to the load
event and to the first contentful paint, the DOM's sections and plots, and the sizes of
the page and of the artifact's vocabularies it summarises. `--screenshot` keeps the top
of the page as a PNG (the README's: `make run`, then
`python -m bench.report out/artifacts --screenshot docs/report-example.png`).
"""

import argparse
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts")
    parser.add_argument("--base")
    parser.add_argument("--out")
    parser.add_argument("--screenshot", help="PNG of the page's top 1280 x 1500 pixels")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(tempfile.mkdtemp(), "report.html")

    started = time.perf_counter()
    import prepro
    arts = prepro.load(args.artifacts)
    report = arts.report(out, base=args.base)
    built = time.perf_counter() - started
    vocabulary_bytes = sum(arts.manifest["files"][e["state"]["vocabulary_file"]]["bytes"]
                           for e in arts.manifest["features"].values() if "vocabulary_file" in e["state"])
    tokens = sum(e["state"].get("vocabulary_size", 0) for e in arts.manifest["features"].values())

    from tests.test_report import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        opened = time.perf_counter()
        page.goto("file://" + os.path.abspath(out), wait_until="load")
        loaded = time.perf_counter() - opened
        page.wait_for_timeout(500)  # paint entries arrive after the load event
        paint = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null")
        sections = page.evaluate("document.querySelectorAll('section.feature').length")
        plots = page.evaluate("document.querySelectorAll('figure[data-plot] svg').length")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1500})
        browser.close()
    print(f"artifact: {len(arts.features)} feature(s), {tokens:,} vocabulary tokens ({vocabulary_bytes / 1e6:,.1f} MB "
          f"of vocabulary files)")
    print(f"report: {os.path.getsize(out) / 1e3:,.0f} kB, built in {built:.2f} s (load, verify, plots: "
          f"{report.seconds:.2f} s of it) -> {out}")
    painted = "not reported" if paint is None else f"{paint:,.0f} ms"
    print(f"chromium: load event {loaded * 1e3:,.0f} ms, first contentful paint {painted}; "
          f"{sections} sections, {plots} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
