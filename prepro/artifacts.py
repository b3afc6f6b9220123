"""The artifact directory: state files plus `manifest.json`, written last.

Layout (see docs/artifact-format.md):

    manifest.json                          format, spec, figures, file checksums, provenance
    state-<hash>/<feature>/vocabulary.txt  Keras vocabulary file: one token per line, UTF-8

Every published state lives in its own directory named by a hash of its files
(`state_dir_name`), and the manifest naming it is written last, in one atomic write
(pipelines/publish.py), so a reader sees the previous artifact or the new one, never a
mix. A directory without a manifest is not an artifact; a file that does not match its
checksum is refused by `read_manifest`. Version-1 artifacts kept their files directly
under the root and stay readable.
"""

import hashlib
import json
from typing import Any, Dict, Mapping

from prepro import fs

FORMAT = "prepro.artifacts"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
STATE_DIR_PREFIX = "state-"


class ArtifactError(RuntimeError):
    """An artifact that is missing, incomplete, corrupt or of an unknown format."""


class Digest:
    """A file's manifest entry (size and SHA-256), computed from its bytes piece by piece."""

    def __init__(self):
        self._sha = hashlib.sha256()
        self.bytes = 0

    def update(self, data: bytes) -> "Digest":
        self._sha.update(data)
        self.bytes += len(data)
        return self

    def entry(self) -> Dict[str, Any]:
        return {"bytes": self.bytes, "sha256": self._sha.hexdigest()}


def file_entry(data: bytes) -> Dict[str, Any]:
    return Digest().update(data).entry()


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, fixed separators, so equal content is equal bytes."""
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    return (json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(root: str, verify: bool = True) -> Dict[str, Any]:
    path = fs.join(root, MANIFEST)
    if not fs.exists(path):
        raise ArtifactError(f"{root}: no {MANIFEST}; not a prepro artifact, or its job did not finish")
    try:
        manifest = json.loads(fs.read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable manifest: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a prepro manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(f"{path}: format version {manifest.get('format_version')!r}; this prepro "
                            f"reads versions {READABLE_VERSIONS}. Re-run the analyze job or upgrade prepro.")
    if verify:
        for relpath, expected in sorted(manifest.get("files", {}).items()):
            verify_file(state_root(root, manifest), relpath, expected)
    return manifest


def state_root(root: str, manifest: Mapping[str, Any]) -> str:
    """The directory the manifest's file paths are relative to."""
    return fs.join(root, manifest["state_dir"]) if manifest.get("state_dir") else root


def state_dir_name(files: Mapping[str, Mapping[str, Any]]) -> str:
    """The state directory of an artifact with these files: a hash of their paths,
    sizes and SHA-256s. The same files get the same name (so the same input gives
    byte-identical artifacts); different ones a new directory beside the published one."""
    listing = json.dumps(sorted([p, e["bytes"], e["sha256"]] for p, e in files.items()))
    return STATE_DIR_PREFIX + hashlib.sha256(listing.encode("utf-8")).hexdigest()[:16]


def verify_file(root: str, relpath: str, expected: Mapping[str, Any]) -> None:
    path = fs.join(root, relpath)
    if not fs.exists(path):
        raise ArtifactError(f"{path}: listed in the manifest but missing")
    found = _streamed_entry(path)
    if found != dict(expected):
        raise ArtifactError(f"{path}: size or SHA-256 does not match the manifest "
                            f"(expected {dict(expected)}, found {found}); the artifact "
                            f"was modified or partly overwritten")


def _streamed_entry(path: str, chunk: int = 8 << 20) -> Dict[str, Any]:
    """`file_entry` of a file read in chunks: vocabularies can be hundreds of MB."""
    digest = Digest()
    with fs.open_read(path) as f:
        for data in iter(lambda: f.read(chunk), b""):
            digest.update(data)
    return digest.entry()
