"""`prepro report` in a real headless Chromium (Debian's package, driven by Playwright):
the page loads from disk with no console error and no network request, every feature's
section and plots render, hostile tokens stay text, and a screenshot is kept in
test-artifacts/ (the README's comes from `python -m bench.report`)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import prepro
from pipelines.analyze import run_analyze
from prepro.spec import load_spec, spec_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOTS = os.path.join(ROOT, "test-artifacts")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium calls Google's hosts at start-up.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The plots each layer's section draws (with a base, the drift plot too).
PLOTS = {"TextVectorization": {"rank-frequency", "coverage"}, "StringLookup": {"rank-frequency", "coverage"},
         "IntegerLookup": {"rank-frequency", "coverage"}, "Discretization": {"histogram", "occupancy"},
         "Normalization": set(), "Hashing": set(), "CategoryEncoding": set()}
HOSTILE = '<img src="http://example.invalid/x.png" onerror="console.error(1)">'


def _browser():
    # Not a skip: the report's check needs a browser, and `make setup` installs it.
    assert os.path.exists(CHROMIUM), "Debian's chromium is not installed (make setup installs it: apt-get install chromium)"
    from playwright.sync_api import sync_playwright
    return sync_playwright()


def open_in_chromium(path: str, screenshot: str = None):
    """Loads `path` from disk; returns (console errors, requests, DOM summary)."""
    url = "file://" + os.path.abspath(path)
    errors, requests = [], []
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url, wait_until="load")
        summary = page.evaluate("""() => [...document.querySelectorAll('section.feature')].map(s => ({
            name: s.dataset.feature, layer: s.dataset.layer,
            plots: [...s.querySelectorAll('figure[data-plot]')].map(f => {
                const box = f.querySelector('svg').getBoundingClientRect();
                return {kind: f.dataset.plot, width: box.width, height: box.height,
                        paths: f.querySelectorAll('svg path').length};
            }),
            text: s.innerText}))""")
        scripts = page.evaluate("document.scripts.length")
        if screenshot:
            os.makedirs(os.path.dirname(screenshot), exist_ok=True)
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return errors, [r for r in requests if r != url], summary, scripts


def _check_rendered(arts, summary, with_base: bool):
    assert [s["name"] for s in summary] == arts.features
    for section in summary:
        wanted = set(PLOTS[section["layer"]])
        entry = arts.manifest["features"][section["name"]]
        if section["layer"] == "Discretization" and "boundaries_file" not in entry["state"]:
            wanted = set()
        if "document_frequencies_file" in entry["state"]:
            wanted.add("idf")
        if with_base and wanted:
            wanted.add("drift-histogram" if section["layer"] == "Discretization" else "drift-coverage")
        kinds = {p["kind"] for p in section["plots"]}
        assert kinds == wanted, section["name"]
        for plot in section["plots"]:  # drawn: a visible box with the plot's lines in it
            assert plot["width"] > 200 and plot["height"] > 100 and plot["paths"] > 5, (section["name"], plot)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The bundled example, and a base made from one of its three files."""
    root = tmp_path_factory.mktemp("report")
    spec = load_spec(os.path.join(ROOT, "examples", "spec.yaml"))
    data = sorted(os.path.join(ROOT, "examples", "data", f) for f in os.listdir(os.path.join(ROOT, "examples", "data")))
    run_analyze(spec, data[:1], "csv", str(root / "base"), golden_rows=0)
    run_analyze(spec, data, "csv", str(root / "arts"), golden_rows=0)
    return root


def test_the_bundled_examples_report_renders_in_chromium_without_network_or_errors(example):
    arts = prepro.load(str(example / "arts"))
    report = arts.report(str(example / "report.html"), base=str(example / "base"))
    errors, requests, summary, scripts = open_in_chromium(example / "report.html",
                                                          os.path.join(SCREENSHOTS, "report-example.png"))
    assert errors == [] and requests == [] and scripts == 0
    _check_rendered(arts, summary, with_base=True)
    review = next(s for s in summary if s["name"] == "review")
    assert "'the'" in review["text"] and "Since the base" in review["text"]
    assert os.path.getsize(os.path.join(SCREENSHOTS, "report-example.png")) > 50_000
    assert len(report.html) < 1_000_000 and report.html == arts.report(base=str(example / "base")).html  # deterministic


def test_hostile_tokens_tf_idf_and_vectors_render_as_text(tmp_path):
    rng = np.random.default_rng(3)
    rows = 3000
    words = [HOSTILE if i % 7 == 0 else f"w{int(x)}" for i, x in enumerate(rng.zipf(1.5, rows))]
    with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"t": " ".join(words[i:i + 4]), "v": [float(x) for x in rng.normal(size=3)],
                                "w": words[i]}) + "\n")
    spec = spec_from_dict({"features": {
        "t": {"source": "t", "layer": "TextVectorization",
              "config": {"output_mode": "tf_idf", "max_tokens": 40, "standardize": None, "split": "whitespace"}},
        "w": {"source": "w", "layer": "StringLookup", "min_count": 3},
        "v": {"source": "v", "layer": "Normalization", "shape": [3]},
        "b": {"source": "v", "layer": "Discretization", "shape": [3], "config": {"bin_boundaries": [-1.0, 0.0, 1.0]}},
    }})
    run_analyze(spec, [str(tmp_path / "d.jsonl")], "jsonl", str(tmp_path / "arts"), golden_rows=0)
    arts = prepro.load(str(tmp_path / "arts"))
    arts.report(str(tmp_path / "r.html"))
    errors, requests, summary, _ = open_in_chromium(tmp_path / "r.html", os.path.join(SCREENSHOTS, "report-hostile.png"))
    assert errors == [] and requests == []
    _check_rendered(arts, summary, with_base=False)
    w = next(s for s in summary if s["name"] == "w")
    assert HOSTILE in w["text"]  # shown as text, never parsed as markup
    v = next(s for s in summary if s["name"] == "v")
    mean, _ = arts.moments("v")
    assert f"{mean.ravel()[2]:.7g}" in v["text"]


def test_a_version_3_artifact_reports_its_figures_and_says_it_has_no_profile(example, tmp_path):
    from artifact_fixtures import read_manifest_json, write_manifest_json
    copy = shutil.copytree(example / "arts", tmp_path / "v3")
    manifest = read_manifest_json(str(copy))
    manifest["format_version"] = 3
    for entry in manifest["features"].values():
        for key in ("counts_file", "count_distribution_file", "quantiles_file"):
            manifest["files"].pop(entry.get("profile", {}).get(key), None)
        entry.pop("profile", None)
    write_manifest_json(str(copy), manifest)
    html = prepro.load(str(copy)).report().html
    assert html.count("No profile: this artifact predates format version 4") == 4  # 3 vocabularies, 1 learned bins
    errors, requests, summary, _ = open_in_chromium(_saved(tmp_path / "v3.html", html))
    assert errors == [] and requests == [] and len(summary) == 7


def _saved(path, html):
    path.write_text(html, encoding="utf-8")
    return path


def test_the_report_command_and_the_notebook_view(example, tmp_path):
    out = tmp_path / "cli.html"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", str(example / "arts"), "--base",
                           str(example / "base"), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"prepro report: {out}: ") and "7 feature(s), against" in done.stdout
    assert out.read_text(encoding="utf-8") == prepro.load(str(example / "arts")).report(base=str(example / "base")).html
    inline = prepro.load(str(example / "arts")).report()._repr_html_()
    assert inline.startswith("<iframe srcdoc=") and "sandbox" in inline and "<script" not in inline
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", str(tmp_path / "nothing"), "--out",
                          str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no manifest.json" in bad.stderr


def test_the_report_never_replaces_a_file_of_the_artifacts_it_reads(example, tmp_path):
    from artifact_fixtures import copy_artifact
    arts_dir, base_dir = (copy_artifact(str(example / n), tmp_path / n) for n in ("arts", "base"))
    manifests = {d: open(os.path.join(d, "manifest.json"), "rb").read() for d in (arts_dir, base_dir)}
    arts = prepro.load(arts_dir)
    state = os.path.join(arts_dir, arts.manifest["state_dir"])
    (tmp_path / "up").symlink_to(tmp_path)
    refused = [os.path.join(arts_dir, "manifest.json"), str(tmp_path / "up" / "arts" / "manifest.json"),
               os.path.join(state, sorted(arts.manifest["files"])[0]), os.path.join(state, "report.html")]
    for out in refused:
        with pytest.raises(ValueError, match="a file of the artifact .* the report would replace it"):
            arts.report(out)
    # The base's manifest too, named by path as the command line does.
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", arts_dir, "--base", base_dir, "--out",
                           os.path.join(base_dir, "manifest.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "a file of the artifact" in done.stderr
    with pytest.raises(ValueError, match="a directory; name the HTML file"):
        arts.report(str(tmp_path))
    assert {d: open(os.path.join(d, "manifest.json"), "rb").read() for d in (arts_dir, base_dir)} == manifests
    prepro.load(arts_dir), prepro.load(base_dir)
    # Beside the manifest is fine (the artifact ignores unlisted files), and a symlink
    # at `out` is replaced, not followed (the file is renamed into place).
    (tmp_path / "link.html").symlink_to(os.path.join(arts_dir, "manifest.json"))
    for out in (os.path.join(arts_dir, "report.html"), str(tmp_path / "link.html")):
        arts.report(out)
        assert open(out, encoding="utf-8").read().startswith("<!doctype html>")
    assert not os.path.islink(tmp_path / "link.html") and prepro.load(arts_dir).manifest == arts.manifest


def test_a_feature_whose_layer_changed_since_the_base_says_so(tmp_path):
    # A Discretization in the base, a StringLookup now, under one name: the drift view
    # read the base's quantile profile as a count distribution (KeyError).
    data = os.path.join(ROOT, "examples", "data", "flights-0.csv")
    for label, feature in (("numbers", {"source": "delay_minutes", "layer": "Discretization", "config": {"num_bins": 4}}),
                           ("tokens", {"source": "carrier", "layer": "StringLookup"})):
        run_analyze(spec_from_dict({"features": {"x": feature}}), [data], "csv", str(tmp_path / label), golden_rows=0)
    for base, now in (("numbers", "tokens"), ("tokens", "numbers")):
        html = prepro.load(str(tmp_path / now)).report(base=str(tmp_path / base)).html
        layers = [prepro.load(str(tmp_path / n)).manifest["features"]["x"]["layer"] for n in (base, now)]
        assert f"The layer changed: {layers[0]} in the base, {layers[1]} now" in html
        errors, requests, summary, _ = open_in_chromium(_saved(tmp_path / f"{now}.html", html))
        assert errors == [] and requests == [] and [s["name"] for s in summary] == ["x"]
        assert not {p["kind"] for p in summary[0]["plots"]} & {"drift-coverage", "drift-histogram"}


def test_thousands_of_boundaries_make_a_small_quick_report(tmp_path):
    # 4,999 boundaries drawn one Line2D and one bar each took 10.6 s and 3.4 MB (with a base).
    data = sorted(os.path.join(ROOT, "examples", "data", f) for f in os.listdir(os.path.join(ROOT, "examples", "data")))
    spec = spec_from_dict({"features": {"d": {"source": "distance_km", "layer": "Discretization",
                                              "config": {"num_bins": 5000}}}})
    run_analyze(spec, data, "csv", str(tmp_path / "bins"), golden_rows=0)
    arts = prepro.load(str(tmp_path / "bins"))
    report = arts.report(base=arts)
    assert report.seconds < 5 and len(report.html) < 1_000_000, (report.seconds, len(report.html))
    assert "dashed lines: the 4999 boundaries (every 25th)." in report.html
    errors, requests, summary, _ = open_in_chromium(_saved(tmp_path / "bins.html", report.html))
    assert errors == [] and requests == []
    assert {p["kind"] for p in summary[0]["plots"]} == {"histogram", "occupancy", "drift-histogram"}
    assert all(p["paths"] < 500 and p["width"] > 300 for p in summary[0]["plots"]), summary[0]["plots"]
