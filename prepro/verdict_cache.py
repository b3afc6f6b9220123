"""A cache of Keras's verdict on a spec (`prepro.keras_check`), so a job whose spec
Keras already judged imports no TensorFlow to check it again (~4.4 s of a 1,000-row
CLI run, and as many CPU seconds taken from the job on a small machine).

What the check's verdict depends on, and so what the key is made of: the spec's
features as the artifact records them (`Spec.to_dict()`: names, sources, layers,
configs, shapes, which is all `keras_check.trivial_artifacts` builds from), the
installed keras, tensorflow, numpy and Python versions, the Keras backend the
environment selects, and prepro's own code (the check builds layers through
`prepro.layers` and `prepro.training`; a changed prepro is a new key). The key is the
SHA-256 of the canonical JSON of all that; an entry is `<cache>/keras-check/<key>.json`
under `$PREPRO_CACHE_DIR` (default `~/.cache/prepro`, as for remote vocabularies:
`prepro.artifacts.StateFiles.local_path`), holding the verdict: accepted, or refused
with the check's message.

Never cached: a spec with a `standardize`/`split` callable (a Python object or a
"module:function": its code may change without the spec changing). Entries are written
whole (a temporary file renamed into place, `prepro.fs.write_bytes`); one that cannot be
read, is not exactly the expected structure, or names another key is ignored and the
check runs again (its result then replaces it). The cache trusts its directory as pip's
does: a well-formed entry someone forged there is believed. `PREPRO_KERAS_CHECK_CACHE=0`
(or false/no/off) turns it off: every job checks with Keras.
"""

import hashlib
import importlib.metadata
import json
import os
import platform
from typing import Any, Dict, Optional

from prepro import fs, spec as spec_lib

FORMAT = "prepro.keras_check_verdict"
SUBDIR = "keras-check"
MAX_ENTRY_BYTES = 1 << 16  # a refusal's message is at most a few kB (keras_reason cuts at 400 characters)
_VERSIONED = ("keras", "tensorflow", "numpy", "ml-dtypes")


def enabled() -> bool:
    return os.environ.get("PREPRO_KERAS_CHECK_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> str:
    """Where entries are kept (the convention of prepro's other local cache)."""
    root = os.environ.get("PREPRO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "prepro")
    return os.path.join(root, SUBDIR)


def cacheable(spec: spec_lib.Spec) -> bool:
    """No callable anywhere (objects or references): their code is not in the key."""
    return not any(callable(f.config.get(k)) or spec_lib._is_callable_ref(f.config.get(k))
                   for f in spec.features.values() for k in ("standardize", "split"))


def key(spec: spec_lib.Spec) -> str:
    """The SHA-256 (hex) of everything the verdict depends on (the module docstring)."""
    what = {"format": FORMAT, "spec": spec.to_dict(), "versions": _versions(), "backend": _backend(),
            "python": platform.python_version(), "prepro": _prepro_code()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def lookup(spec: spec_lib.Spec) -> Optional[Dict[str, Any]]:
    """The cached verdict, `{"refused": None}` or `{"refused": message}`; None when the
    spec is not cacheable, the cache is off, or no well-formed entry holds it."""
    if not enabled() or not cacheable(spec):
        return None
    k = key(spec)
    try:
        with open(os.path.join(cache_dir(), k + ".json"), "rb") as f:
            data = f.read(MAX_ENTRY_BYTES + 1)
        entry = json.loads(data.decode("utf-8")) if len(data) <= MAX_ENTRY_BYTES else None
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 JSON: a miss
        return None
    return _verdict(entry, k)


def store(spec: spec_lib.Spec, refused: Optional[str]) -> None:
    """Keeps Keras's verdict (None: accepted). A cache that cannot be written is no error."""
    if not enabled() or not cacheable(spec):
        return
    k = key(spec)
    entry = {"format": FORMAT, "key": k, "refused": refused}
    if _verdict(entry, k) is None:
        return
    try:
        if fs.is_remote(cache_dir()):
            return
        fs.write_bytes(os.path.join(cache_dir(), k + ".json"),
                       (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
    except OSError:
        pass


def check(spec: spec_lib.Spec, custom_objects=None) -> None:
    """`keras_check.check_against_keras` through the cache: a hit imports no TensorFlow
    (a cached refusal is raised as the same SpecError); a miss checks with Keras and
    keeps the verdict."""
    from prepro.spec import SpecError
    cached = lookup(spec)
    if cached is not None:
        if cached["refused"]:
            raise SpecError(cached["refused"])
        return
    from prepro.keras_check import check_against_keras
    try:
        check_against_keras(spec, custom_objects)
    except SpecError as e:
        store(spec, str(e))
        raise
    store(spec, None)


def _verdict(entry: Any, k: str) -> Optional[Dict[str, Any]]:
    """The verdict of a well-formed entry for key `k`, else None (never "accepted" by default)."""
    if not isinstance(entry, dict) or set(entry) != {"format", "key", "refused"}:
        return None
    if entry["format"] != FORMAT or entry["key"] != k:
        return None
    refused = entry["refused"]
    if refused is not None and not (isinstance(refused, str) and refused.strip()):
        return None
    return {"refused": refused}


def _versions() -> Dict[str, str]:
    out = {}
    for package in _VERSIONED:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def _backend() -> Dict[str, Any]:
    """What selects the Keras backend (and its float type): KERAS_BACKEND, then keras.json."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), "rb") as f:
            config = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        config = None
    return {"KERAS_BACKEND": os.environ.get("KERAS_BACKEND"), "keras.json": config}


_CODE: Optional[str] = None


def _prepro_code() -> str:
    """SHA-256 over prepro's modules (the check runs through several of them); read once
    per process (~0.3 MB, about a millisecond)."""
    global _CODE
    if _CODE is None:
        here = os.path.dirname(os.path.abspath(__file__))
        digest = hashlib.sha256()
        for name in sorted(os.listdir(here)):
            if name.endswith(".py"):
                with open(os.path.join(here, name), "rb") as f:
                    digest.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
        _CODE = digest.hexdigest()
    return _CODE
