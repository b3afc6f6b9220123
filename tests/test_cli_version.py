"""`prepro --version`: prepro's version and the Keras/TF/Beam series it is built against,
which must be the ranges setup.py admits."""

import os
import re
import subprocess
import sys

import prepro
from prepro.versions import TESTED_WITH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version_prints_prepro_and_the_pinned_stack_quickly():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipelines.cli", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"prepro {prepro.__version__} (Python ")
    for package, series in TESTED_WITH.items():
        line = next(line for line in lines if line.split()[0] == package)
        assert f"{series}.x" in line and "installed " + series in line and "<-" not in line
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"tensorflow", "keras", "apache_beam", "matplotlib"}  # answers without them


def test_the_tested_series_are_setup_pys_ranges():
    setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    for package, series in TESTED_WITH.items():
        major, minor = map(int, series.split("."))
        pattern = rf'"{re.escape(package)}(\[[a-z]+\])?>={major}\.{minor},<{major}\.{minor + 1}"'
        assert re.search(pattern, setup), package
