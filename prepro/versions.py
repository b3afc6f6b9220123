"""Which versions prepro is built and tested against (setup.py's ranges; requirements.lock
pins the exact set), and which are installed: `prepro --version`."""

import importlib.metadata
import platform
from typing import Dict, List

# The package, and the release series setup.py admits and CI tests (tests/test_cli_version.py
# checks these against setup.py).
TESTED_WITH: Dict[str, str] = {
    "keras": "3.15",
    "tensorflow": "2.21",
    "apache-beam": "2.77",
    "tfx-bsl": "1.21",
}


def installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def version_lines() -> List[str]:
    from prepro import __version__
    lines = [f"prepro {__version__} (Python {platform.python_version()})"]
    for package, series in TESTED_WITH.items():
        found = installed(package)
        mark = "" if found == series or found.startswith(series + ".") else "   <- prepro is tested with " + series
        lines.append(f"  {package:<12} {series + '.x':<8} installed {found}{mark}")
    lines.append(f"  {'pyarrow':<12} {'':<8} installed {installed('pyarrow')}")
    return lines
