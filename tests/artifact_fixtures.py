"""A real artifact made by the real job, copies of it, and the same artifact written as
format version 1 (files under the root) and as version 2 (files under a fixed state
directory, so tests can name it), for the tests that attack the reading side
(test_artifact_trust.py, test_fuzz_manifest.py).

The artifact has every kind of state: file-backed vocabularies (TextVectorization,
IntegerLookup), a vocabulary with an exception (a token holding a line break, so the
layer gets a list), document frequencies (tf_idf), moments, boundaries, two layers with
nothing to learn, and golden rows.
"""

import json
import os
import shutil

from conftest import write_jsonl

SPEC = {"features": {
    "review": {"source": "text", "layer": "TextVectorization",
               "config": {"max_tokens": 50, "output_mode": "int", "output_sequence_length": 4}},
    "review_tfidf": {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"}},
    "carrier": {"source": "carrier", "layer": "StringLookup"},
    "flight": {"source": "flight", "layer": "IntegerLookup"},
    "delay": {"source": "delay", "layer": "Discretization", "config": {"num_bins": 4}},
    "distance": {"source": "distance", "layer": "Normalization"},
    "cabin": {"source": "cabin", "layer": "CategoryEncoding", "config": {"num_tokens": 4, "output_mode": "one_hot"}},
    "passenger": {"source": "passenger", "layer": "Hashing", "config": {"num_bins": 64}},
}}
STATE_DIR = "state-0123456789abcdef"
WORDS = ["the", "flight", "was", "late", "crew", "good", "seat", "food"]

_made = {}


def real_artifact(tmp_path_factory) -> str:
    """The artifact, made once per test session by the real job (run_analyze); never
    modify it: copy it (`copy_artifact`)."""
    if "v1" not in _made:
        from pipelines.analyze import run_analyze
        from prepro.spec import spec_from_dict
        base = tmp_path_factory.mktemp("real_artifact")
        rows = [{"text": " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 2 + i % 5)),
                 "carrier": "x\ny" if i % 7 == 3 else ["AA", "UA", "DL"][i % 3],
                 "flight": 100 + i % 9, "delay": float((i * 37) % 101), "distance": 10.0 + i * 1.5,
                 "cabin": i % 4, "passenger": f"p{i}"} for i in range(60)]
        data = write_jsonl(base / "rows.jsonl", rows)
        out = str(base / "artifact")
        run_analyze(spec_from_dict(SPEC), [data], "jsonl", out)
        _made["v1"] = to_version_1(out)
    return _made["v1"]


def copy_artifact(source: str, destination) -> str:
    shutil.copytree(source, str(destination), symlinks=True)
    return str(destination)


def read_manifest_json(root: str) -> dict:
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def write_manifest_json(root: str, manifest) -> None:
    """Writes any JSON value as the manifest, as the canonical writer would."""
    from prepro import artifacts
    data = artifacts.manifest_bytes(manifest) if isinstance(manifest, dict) and "format" in manifest \
        else json.dumps(manifest).encode("utf-8")
    with open(os.path.join(root, "manifest.json"), "wb") as f:
        f.write(data)


def with_spec_copy(manifest: dict) -> dict:
    """A version-3 manifest with the top-level spec copy versions 1 and 2 kept."""
    from prepro import artifacts
    assert manifest["format_version"] >= 3 and "spec" not in manifest
    manifest["spec"] = artifacts.spec_dict(manifest)
    return manifest


def to_version_1(root: str) -> str:
    """Rewrites the job's (version 3) artifact as version 1: every listed file moved from
    its state directory to the root, no `state_dir`, a spec copy, `format_version: 1`."""
    manifest = with_spec_copy(read_manifest_json(root))
    state_dir = manifest.pop("state_dir")
    for relpath in manifest["files"]:
        os.renames(os.path.join(root, state_dir, relpath), os.path.join(root, relpath))
    if os.path.isdir(os.path.join(root, state_dir)):
        shutil.rmtree(os.path.join(root, state_dir))
    manifest["format_version"] = 1
    write_manifest_json(root, manifest)
    return root


def to_version_2(root: str) -> str:
    """Rewrites a version-1 artifact as version 2: every listed file moved under
    `state-0123456789abcdef/` (a fixed name tests can refer to), `state_dir` set,
    `format_version: 2`, the manifest written canonically."""
    manifest = read_manifest_json(root)
    assert manifest["format_version"] == 1
    for relpath in manifest["files"]:
        target = os.path.join(root, STATE_DIR, relpath)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(os.path.join(root, relpath), target)
    for name in os.listdir(root):  # the feature directories, now empty
        path = os.path.join(root, name)
        if os.path.isdir(path) and name != STATE_DIR and not os.listdir(path):
            os.rmdir(path)
    manifest.update(format_version=2, state_dir=STATE_DIR)
    write_manifest_json(root, manifest)
    return root


def to_version_3(root: str) -> str:
    """Rewrites a version-1 artifact as version 3, the current one: as `to_version_2`,
    without the spec copy (each feature's entry holds its config)."""
    to_version_2(root)
    manifest = read_manifest_json(root)
    del manifest["spec"]
    manifest["format_version"] = 3
    write_manifest_json(root, manifest)
    return root


def state_path(root: str, relpath: str) -> str:
    """Where a listed file of the artifact at `root` is (any version)."""
    manifest = read_manifest_json(root)
    return os.path.join(root, manifest.get("state_dir", ""), relpath)
