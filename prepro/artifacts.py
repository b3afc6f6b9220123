"""The artifact directory: state files plus `manifest.json`, written last.

Layout (see docs/artifact-format.md):

    manifest.json                          format, each feature's config, state and figures,
                                           file checksums, provenance
    state-<hash>/<feature>/vocabulary.txt  Keras vocabulary file: one token per line, UTF-8

Every published state lives in its own directory named by a hash of its files
(`state_dir_name`), and the manifest naming it is written last, in one atomic write
(pipelines/publish.py), so a reader sees the previous artifact or the new one, never a
mix. A directory without a manifest is not an artifact. Older versions stay readable:
version 1 kept its files directly under the root; versions 1 and 2 also held a
top-level copy of the spec, which version 3 keeps once, in each feature's entry
(`spec_dict` reads either).

Reading trusts nothing in the directory: `read_manifest` refuses a manifest that is not
a regular file of at most `MAX_MANIFEST_BYTES`, that is not UTF-8 JSON, or whose
structure does not match `MANIFEST_SCHEMA` and the consistency rules after it
(`validate_manifest`); `StateFiles` reads only the files the manifest lists, confined to
the artifact, never through a symlink out of it, never blocking on a FIFO or a device,
each checked against its listed size and SHA-256 at the moment it is read.
"""

import collections
import contextlib
import hashlib
import itertools
import json
import math
import os
import stat
from typing import Any, Dict, Iterator, List, Mapping, Optional

from prepro import fs, spec as spec_lib

FORMAT = "prepro.artifacts"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
# What a feature's manifest entry holds besides its spec entry (source, layer, config, ...).
RESULT_KEYS = ("state", "figures", "profile")
MANIFEST = "manifest.json"
STATE_DIR_PREFIX = "state-"
# The state directory's name while a job writes it (in its work directory): its final
# name, the hash of its files, is known only when every file is written.
STAGING_STATE_DIR = STATE_DIR_PREFIX + "0" * 16
# A manifest holds figures and per-feature exceptions, not state: far below this.
MAX_MANIFEST_BYTES = 256 << 20
# prepro's manifests nest 7 levels deep; a bound keeps every recursive walk of a
# hostile one (jsonschema, the spec parser, copies) far from Python's recursion limit.
MAX_JSON_DEPTH = 64
_CHUNK = 8 << 20


class ArtifactError(RuntimeError):
    """An artifact that is missing, incomplete, corrupt, malformed or of an unknown format."""


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


# --------------------------------------------------------------------------- reading

def read_manifest(root: str, verify: bool = True) -> Dict[str, Any]:
    """The artifact's manifest, validated (`validate_manifest`); with `verify`, every
    file it lists is checked against its size and SHA-256 too."""
    path = fs.join(root, MANIFEST)
    manifest = validate_manifest(parse_json(read_manifest_bytes(root), path), path)
    if verify:
        StateFiles(root, manifest).verify_all()
    return manifest


def spec_dict(manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """The spec the artifact was made from, as `Spec.to_dict` writes it: gathered from
    the feature entries (version 3), or the top-level copy versions 1 and 2 kept."""
    if manifest["format_version"] < 3:
        return manifest["spec"]
    return {"features": {name: {k: v for k, v in entry.items() if k not in RESULT_KEYS}
                         for name, entry in sorted(manifest["features"].items())}}


def state_root(root: str, manifest: Mapping[str, Any]) -> str:
    """The directory the manifest's file paths are relative to: the root (version 1)
    or `<root>/<state_dir>` (versions 2 and 3)."""
    return fs.join(root, manifest["state_dir"]) if manifest.get("state_dir") else root


def state_dir_name(files: Mapping[str, Mapping[str, Any]]) -> str:
    """The state directory of an artifact with these files: a hash of their paths,
    sizes and SHA-256s. The same files get the same name (so the same input gives
    byte-identical artifacts); different ones a new directory beside the published one."""
    listing = json.dumps(sorted([p, e["bytes"], e["sha256"]] for p, e in files.items()))
    return STATE_DIR_PREFIX + hashlib.sha256(listing.encode("utf-8")).hexdigest()[:16]


def parse_json(data: bytes, where: str) -> Any:
    """Strict UTF-8 JSON without duplicate keys and at most MAX_JSON_DEPTH deep, or an
    ArtifactError naming `where`."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise ArtifactError(f"{where}: unreadable JSON: nested too deeply") from None
    except ValueError as e:  # UnicodeDecodeError, JSONDecodeError, integers of > 4300 digits
        raise ArtifactError(one_line(f"{where}: unreadable JSON: {e}")) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ArtifactError(f"{where}: unreadable JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _no_duplicate_keys(pairs):
    """An object whose keys are distinct (JSON readers disagree on which duplicate wins)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        counts = collections.Counter(k for k, _ in pairs)
        raise ValueError(f"duplicate keys {sorted(k for k, n in counts.items() if n > 1)[:5]}")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (the input may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def read_manifest_bytes(root: str) -> bytes:
    """The manifest file's bytes, read as a confined regular file of at most
    MAX_MANIFEST_BYTES (never blocking on a FIFO or device), or an ArtifactError."""
    path = fs.join(root, MANIFEST)
    if fs.is_remote(root):
        if not fs.exists(path):
            raise _no_manifest(root)
        with fs.open_read(path) as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    else:
        try:
            fd = _open_confined(os.path.realpath(root), path)
            with os.fdopen(fd, "rb", buffering=0) as f:
                if os.fstat(fd).st_size > MAX_MANIFEST_BYTES:
                    raise _too_big(path)
                data = _read_at_most(f, MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise _no_manifest(root) from None
        except OSError as e:
            raise ArtifactError(one_line(f"{path}: cannot read it: {e.strerror or e}")) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise _too_big(path)
    return data


def _no_manifest(root: str) -> ArtifactError:
    return ArtifactError(f"{root}: no {MANIFEST}; not a prepro artifact, or its job did not finish")


def _too_big(path: str) -> ArtifactError:
    return ArtifactError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MB; not a prepro manifest")


class StateFiles:
    """The state files of one artifact, read only as its manifest lists them.

    Every read goes through here: a path must be a key of the manifest's `files`; a
    local file must resolve (symlinks included) inside the artifact's root and be a
    regular file (a FIFO, device, socket or directory is refused before it is opened,
    so nothing blocks), of the listed size; its bytes are hashed as they are read and
    refused unless size and SHA-256 match. Remote files (gs://...) have no symlinks or
    special files; their bytes are checked the same way.
    """

    def __init__(self, root: str, manifest: Mapping[str, Any]):
        self.root = root
        self.dir = state_root(root, manifest)
        self.entries: Mapping[str, Mapping[str, Any]] = manifest["files"]
        self._real_root = None if fs.is_remote(root) else os.path.realpath(root)

    def path(self, relpath: str) -> str:
        """Where a listed file is, for a reader that takes a path (TensorFlow's
        TextFileInitializer): `verify` it before and after that reader runs."""
        self._entry(relpath)
        return fs.join(self.dir, relpath)

    def local_path(self, relpath: str) -> str:
        """A local path holding the file's checked bytes, for a reader that takes a path
        (TensorFlow's TextFileInitializer): the file itself in a local artifact; for a
        remote one (gs://...) a copy in the local cache, `$PREPRO_CACHE_DIR` (default
        ~/.cache/prepro), named by its SHA-256, copied once and checked on every call.
        So TensorFlow reads local disk, and the bucket is read through the same client as
        the manifest (TensorFlow's own GCS client ignores STORAGE_EMULATOR_HOST)."""
        expected = dict(self._entry(relpath))
        if self._real_root is not None:
            return self.path(relpath)
        cache = os.environ.get("PREPRO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "prepro")
        target = os.path.join(cache, expected["sha256"], os.path.basename(relpath))
        if os.path.isfile(target):
            with open(target, "rb") as f:
                digest = Digest()
                for chunk in _chunks(f, expected["bytes"]):
                    digest.update(chunk)
            if digest.entry() == expected:
                return target
        source = fs.join(self.dir, relpath)
        digest = Digest()
        try:
            with self._open(source, expected["bytes"]) as f, fs.open_write(target) as out:
                for chunk in _chunks(f, expected["bytes"]):
                    digest.update(chunk)
                    out.write(chunk)
                if digest.entry() != expected:  # the copy is never put in place
                    raise _mismatch(source, expected, digest.entry())
        except FileNotFoundError:
            raise ArtifactError(f"{source}: listed in the manifest but missing") from None
        return target

    def read(self, relpath: str) -> bytes:
        """The file's bytes, checked against the manifest: exactly the bytes returned."""
        return self._checked(relpath)

    def verify(self, relpath: str) -> None:
        """Checks the file's size and SHA-256 by streaming it (vocabularies can be GBs)."""
        for _ in self.blocks(relpath):
            pass

    def blocks(self, relpath: str, size: int = _CHUNK) -> Iterator[bytes]:
        """The file's bytes in consecutive blocks of `size`, for a reader that needs no
        more than a block at a time. The check comes last: a mismatch raises instead of
        the end of the iteration, so a reader must finish before it trusts what it read."""
        digest = Digest()
        with self._reading(relpath) as (f, expected, path):
            for chunk in _chunks(f, expected["bytes"], size):
                digest.update(chunk)
                yield chunk
        if digest.entry() != expected:
            raise _mismatch(path, expected, digest.entry())

    def open_checked_size(self, relpath: str):
        """A listed file opened for random access (a reader of parts of a big file, whose
        checksum was verified before), confined as `read` is and of the listed size."""
        expected = self._entry(relpath)
        path = fs.join(self.dir, relpath)
        try:
            return self._open(path, expected["bytes"])
        except FileNotFoundError:
            raise ArtifactError(f"{path}: listed in the manifest but missing") from None

    def verify_all(self) -> None:
        for relpath in sorted(self.entries):
            self.verify(relpath)

    def _entry(self, relpath: str) -> Mapping[str, Any]:
        try:
            return self.entries[relpath]
        except KeyError:
            raise ArtifactError(one_line(f"{self.root}: {relpath!r} is not listed in the manifest's files; "
                                          f"refusing to read it")) from None

    def _checked(self, relpath: str) -> bytes:
        with self._reading(relpath) as (f, expected, path):
            # One buffer, not blocks joined: a vocabulary is read at 1x its size.
            data = _read_at_most(f, expected["bytes"] + 1)
        found = Digest().update(data).entry()
        if found != expected:
            raise _mismatch(path, expected, found)
        return data

    @contextlib.contextmanager
    def _reading(self, relpath: str):
        """A listed file opened for reading, with its manifest entry and its path; a
        missing or unreadable file is an ArtifactError naming it."""
        expected = dict(self._entry(relpath))
        path = fs.join(self.dir, relpath)
        try:
            with self._open(path, expected["bytes"]) as f:
                yield f, expected, path
        except FileNotFoundError:
            raise ArtifactError(f"{path}: listed in the manifest but missing") from None
        except OSError as e:
            raise ArtifactError(one_line(f"{path}: cannot read it: {e.strerror or e}")) from None

    def _open(self, path: str, size: int):
        if self._real_root is None:
            if not fs.exists(path):
                raise FileNotFoundError(path)
            return fs.open_read(path)
        fd = _open_confined(self._real_root, path)
        found = os.fstat(fd).st_size
        if found != size:  # refused before a byte is read: a replaced or growing file
            os.close(fd)
            raise _mismatch(path, {"bytes": size}, {"bytes": found})
        return os.fdopen(fd, "rb", buffering=0)


def _mismatch(path: str, expected: Mapping[str, Any], found: Mapping[str, Any]) -> ArtifactError:
    return ArtifactError(f"{path}: size or SHA-256 does not match the manifest (expected {dict(expected)}, "
                         f"found {dict(found)}); the artifact was modified or partly overwritten")


def _open_confined(real_root: str, path: str) -> int:
    """A read-only descriptor of the regular file at `path`, which must resolve inside
    `real_root`. The kind of file is checked before it is opened (opening a FIFO would
    block, opening a device can act on it), and again on the descriptor, which must be
    the file checked. O_NOFOLLOW: the resolved path's last component cannot have become
    a symlink in between; O_NONBLOCK: nothing blocks even then."""
    real = os.path.realpath(path)
    if real != real_root and os.path.commonpath([real_root, real]) != real_root:
        raise ArtifactError(one_line(f"{path}: resolves to {real}, outside the artifact {real_root}; "
                                      f"refusing to follow a symlink out of it"))
    before = os.stat(real)
    _require_regular(path, before)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)
    try:
        after = os.fstat(fd)
        _require_regular(path, after)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise ArtifactError(f"{path}: replaced while it was being opened")
    except BaseException:
        os.close(fd)
        raise
    return fd


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _require_regular(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise ArtifactError(f"{path}: is {kind}, not a regular file; refused")


def _read_at_most(f, size: int) -> bytes:
    """Up to `size` bytes: one read of a local file returns them all (no copy to join)."""
    data = f.read(size)
    if not data or len(data) == size:
        return data
    rest = b"".join(_chunks(f, size - len(data) - 1))
    return data + rest if rest else data


def _chunks(f, limit: int, size: int = _CHUNK) -> Iterator[bytes]:
    """A file's bytes in chunks, at most `limit + 1` of them: enough to tell that a file
    is longer than listed without reading all of it."""
    remaining = limit + 1
    while remaining > 0:
        chunk = f.read(min(size, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


# --------------------------------------------------------------------------- the schema

def _whole(regex: str) -> str:
    # jsonschema matches with Python's re.search, where `$` also matches before a final
    # "\n"; `\Z` does not, so "vocabulary.txt\n" is refused.
    return "^(?:" + regex + r")\Z"


_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
# '/'-separated names of letters, digits, '_', '.', '-' that start with a letter or digit:
# no '', '.', '..', leading '/', backslash, NUL, ':' (drive letters) or control character,
# so a path can never leave the directory it is relative to.
RELATIVE_PATH_PATTERN = _whole(rf"{_NAME}(?:/{_NAME}){{0,15}}")
FEATURE_NAME_PATTERN = _whole(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
STATE_DIR_PATTERN = _whole(r"state-[0-9a-f]{16}")
SHA256_PATTERN = _whole(r"[0-9a-f]{64}")
BASE64_PATTERN = _whole(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_PATTERN_MEANINGS = {
    RELATIVE_PATH_PATTERN: "a relative path of '/'-separated names (letters, digits, '_', '.', '-'; "
                           "no '..', no leading '/', no backslash)",
    FEATURE_NAME_PATTERN: "a feature name (a letter or digit, then letters, digits, '_', '.', '-')",
    STATE_DIR_PATTERN: "a state directory name (state-<16 lowercase hex digits>)",
    SHA256_PATTERN: "a SHA-256 (64 lowercase hex digits)",
    BASE64_PATTERN: "base64",
}

MAX_COUNT = 2 ** 53          # counters and byte sizes: exact in every JSON reader
MAX_INDEX = 2 ** 31 - 1      # sizes that become allocations or indices (vocabulary, shape)
COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
INDEX = {"type": "integer", "minimum": 0, "maximum": MAX_INDEX}
PATH = {"type": "string", "pattern": RELATIVE_PATH_PATTERN}
TEXT = {"type": "string", "maxLength": 4096}
_SCALAR = {"type": ["null", "boolean", "number", "string"]}
# A layer option is a scalar or a list of scalars (ngrams, axis, salt, bin_boundaries):
# never an object, which Keras could deserialize into something other than data.
_OPTION = {"type": ["null", "boolean", "number", "string", "array"], "items": _SCALAR}
_SIZE_OPTION = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INDEX}
CONFIG = {"type": "object", "maxProperties": 64, "additionalProperties": _OPTION,
          "properties": {k: _SIZE_OPTION for k in ("max_tokens", "num_oov_indices", "output_sequence_length",
                                                    "num_bins", "num_tokens")}}
SHAPE = {"type": "array", "maxItems": 32, "items": INDEX}
SPEC_FEATURE_PROPERTIES = {
    "source": {"type": ["string", "array"], "maxLength": 4096, "maxItems": 4096, "items": TEXT},
    "layer": {"enum": sorted(spec_lib.LAYER_DEFAULTS)},   # the allow-list of Keras classes
    "config": CONFIG,
    "invalid_utf8": TEXT, "min_count": INDEX, "min_document_frequency": INDEX,
    "shape": SHAPE, "weight": TEXT, "quantiles": TEXT, "rank_error": {"type": "number"}, "index_policy": TEXT,
}
SPEC = {"type": "object", "required": ["features"], "additionalProperties": False, "properties": {
    "features": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": FEATURE_NAME_PATTERN},
                 "additionalProperties": {"type": "object", "required": ["layer"], "additionalProperties": False,
                                          "properties": SPEC_FEATURE_PROPERTIES}}}}


def _object(required: List[str], properties: Dict[str, Any], extra: Any = False) -> Dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": extra}


def _vocabulary_state(token: Dict[str, Any]) -> Dict[str, Any]:
    return _object(["vocabulary_file", "vocabulary_size", "documents", "token_start", "exceptions"], {
        "vocabulary_file": PATH, "document_frequencies_file": PATH, "vocabulary_size": INDEX,
        "token_state_file": PATH, "token_state_rows": INDEX,
        "documents": COUNT, "token_start": INDEX,
        "exceptions": {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                                  "prefixItems": [INDEX, token]}}})


_B64_TOKEN = _object(["b64"], {"b64": {"type": "string", "pattern": BASE64_PATTERN}})
_INT64_TOKEN = {"type": "integer", "minimum": -2 ** 63, "maximum": 2 ** 63 - 1}
_DISCRETIZATION_STATE = {
    "type": "object",
    "if": {"required": ["boundaries_file"]},
    "then": _object(["boundaries_file", "num_boundaries", "distinct_boundaries", "quantiles", "rank_error_bound"], {
        "boundaries_file": PATH, "num_boundaries": INDEX, "distinct_boundaries": INDEX,
        "quantile_state_file": PATH, "quantile_state_rows": COUNT, "quantile_sketch_file": PATH,
        "moments_state_file": PATH,
        "quantiles": {"enum": list(spec_lib.QUANTILE_METHODS)},
        "rank_error_bound": {"type": "number", "minimum": 0, "maximum": 1}}),
    "else": _object(["boundaries"], {"boundaries": {"const": "config"}})}


def _figures(names: List[str]) -> Dict[str, Any]:
    # Figures are informational; counters other helpers may add later are any JSON.
    properties = {n: COUNT for n in names}
    properties.update({"coverage": {"type": "number", "minimum": 0, "maximum": 1},
                       "top_tokens": {"type": "array", "items": {
                           "type": "array", "minItems": 2, "maxItems": 2,
                           "prefixItems": [{"type": ["string", "integer"]}, COUNT]}}})
    return _object(names, {n: properties[n] for n in names}, extra=True)


_INPUT_FIGURES = ["rows", "values", "missing"]
_UTF8_FIGURES = ["invalid_utf8_replaced", "invalid_utf8_skipped"]
_TOKEN_FIGURES = _figures(_INPUT_FIGURES + _UTF8_FIGURES + [
    "documents", "tokens_seen", "special_tokens_seen", "distinct_tokens", "below_thresholds", "tokens_kept",
    "coverage", "top_tokens"])
_NUMERIC_FIGURES = _figures(_INPUT_FIGURES + ["nan", "infinite", "zero_weight"])
_CHECKED_FIGURES = _figures(_INPUT_FIGURES + _UTF8_FIGURES)
# What `state` and `figures` hold, per layer (keys: exactly spec.LAYER_DEFAULTS').
_STATE_AND_FIGURES = {
    "TextVectorization": (_vocabulary_state(_B64_TOKEN), _TOKEN_FIGURES),
    "StringLookup": (_vocabulary_state(_B64_TOKEN), _TOKEN_FIGURES),
    "IntegerLookup": (_vocabulary_state(_INT64_TOKEN), _TOKEN_FIGURES),
    "Normalization": (_object(["mean_file", "variance_file", "shape", "count"], {
        "mean_file": PATH, "variance_file": PATH, "moments_state_file": PATH, "shape": SHAPE, "count": COUNT}),
        _NUMERIC_FIGURES),
    "Discretization": (_DISCRETIZATION_STATE, _NUMERIC_FIGURES),
    "Hashing": ({"type": "object", "maxProperties": 0}, _CHECKED_FIGURES),
    "CategoryEncoding": ({"type": "object", "maxProperties": 0}, _CHECKED_FIGURES),
}
assert set(_STATE_AND_FIGURES) == set(spec_lib.LAYER_DEFAULTS)
_NOT_ALLOWED = {"not": {}}  # (not `false`: jsonschema reports a `false` schema's error without its path)
_FLOAT_OR_NULL = {"type": ["number", "null"]}
_VOCABULARY_PROFILE = _object(["counts_file", "count_distribution_file", "count_distribution_rows"], {
    "counts_file": PATH, "count_distribution_file": PATH, "count_distribution_rows": INDEX})
_QUANTILE_PROFILE = _object(["quantiles_file", "quantile_steps", "moments"], {
    "quantiles_file": PATH, "quantile_steps": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
    "moments": _object(["count", "mean", "variance"], {"count": COUNT, "mean": _FLOAT_OR_NULL,
                                                       "variance": _FLOAT_OR_NULL})})
# A feature's `profile` (version 4): the figures behind the report and `prepro diff`.
_PROFILES = {"TextVectorization": _VOCABULARY_PROFILE, "StringLookup": _VOCABULARY_PROFILE,
             "IntegerLookup": _VOCABULARY_PROFILE, "Discretization": _QUANTILE_PROFILE}
FEATURE = {
    **_object(["source", "layer", "config", "state", "figures"],
              {**SPEC_FEATURE_PROPERTIES, "state": {"type": "object"}, "figures": {"type": "object"},
               "profile": {"type": "object"}}),
    "allOf": [{"if": {"required": ["layer"], "properties": {"layer": {"const": layer}}},
               "then": {"properties": {"state": state, "figures": figures,
                                       "profile": _PROFILES.get(layer, _NOT_ALLOWED)}}}
              for layer, (state, figures) in sorted(_STATE_AND_FIGURES.items())]}
FILES = {"type": "object", "propertyNames": PATH,
         "additionalProperties": _object(["bytes", "sha256"], {"bytes": COUNT,
                                                              "sha256": {"type": "string", "pattern": SHA256_PATTERN}})}
GOLDEN = {"type": "object", "required": ["rows"], "properties": {"rows": INDEX},
          "if": {"properties": {"rows": {"const": 0}}},
          "then": _object(["rows", "why"], {"rows": True, "why": TEXT}),
          "else": _object(["rows", "rows_file", "expected_file"], {"rows": True, "rows_file": PATH,
                                                                   "expected_file": PATH})}
_INPUTS = {"type": "array", "items": _object(["path", "bytes", "rows"], {
    "path": {"type": "string"}, "bytes": COUNT, "rows": COUNT}, extra=True)}
_FORMATS = {"type": ["string", "array"], "maxLength": 64, "items": {"type": "string", "maxLength": 64}}
PROVENANCE = _object(["inputs", "input_format", "rows_read"], {
    "inputs": _INPUTS, "input_format": _FORMATS, "rows_read": COUNT,
    "versions": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
    # An update (`--base`): the earlier steps, oldest first; the last one is the base.
    "lineage": {"type": "array", "items": _object(["manifest_sha256", "inputs", "input_format", "rows_read"], {
        "manifest_sha256": {"type": "string", "pattern": SHA256_PATTERN}, "inputs": _INPUTS,
        "input_format": _FORMATS, "rows_read": COUNT})}}, extra=True)
KEPT_STATE = _object(["golden_candidates_file", "golden_candidates_limit"], {
    "golden_candidates_file": PATH, "golden_candidates_limit": INDEX})
_VERSION_RULES = {
    # Version 1 keeps its files directly under the root, later ones under `state_dir`;
    # versions 1 and 2 also kept a copy of the spec, version 3 each config once.
    1: {"required": ["spec"], "properties": {"state_dir": _NOT_ALLOWED}},
    2: {"required": ["spec", "state_dir"]},
    3: {"required": ["state_dir"], "properties": {"spec": _NOT_ALLOWED}},
    # Version 4 adds each feature's `profile` (what the report and `prepro diff` read).
    4: {"required": ["state_dir"], "properties": {"spec": _NOT_ALLOWED}},
}
assert set(_VERSION_RULES) == set(READABLE_VERSIONS)
MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "prepro artifact manifest, format versions 1 to 4",
    **_object(["format", "format_version", "features", "files", "provenance"], {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "enum": list(READABLE_VERSIONS)},
        "state_dir": {"type": "string", "pattern": STATE_DIR_PATTERN},
        "spec": SPEC,
        "features": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": FEATURE_NAME_PATTERN},
                     "additionalProperties": FEATURE},
        "files": FILES,
        "golden": GOLDEN,
        "kept_state": KEPT_STATE,
        "provenance": PROVENANCE}),
    "allOf": [{"if": {"properties": {"format_version": {"const": version}}}, "then": rules}
              for version, rules in sorted(_VERSION_RULES.items())],
}

_validators: Dict[int, Any] = {}


def _schema_validator(schema: Dict[str, Any]):
    if id(schema) not in _validators:
        import jsonschema
        base = jsonschema.Draft202012Validator
        # (The schemas are constants: tests/test_artifacts.py checks them against the
        # meta-schema once, rather than every process at its first read, 0.06 s.)
        # JSON Schema counts 1.0 as an integer; a size or index read as a float is not one.
        checker = base.TYPE_CHECKER.redefine(
            "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
        _validators[id(schema)] = jsonschema.validators.extend(base, type_checker=checker)(schema)
    return _validators[id(schema)]


def check_schema(value: Any, schema: Dict[str, Any], where: str) -> None:
    """An ArtifactError, on one line, naming `where`, the JSON path and what is wrong,
    unless `value` matches `schema` (a module-level constant: its validator is cached)."""
    import jsonschema
    # The most relevant of the first 100 errors: a hostile manifest can hold millions.
    errors = itertools.islice(_schema_validator(schema).iter_errors(value), 100)
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        raise ArtifactError(one_line(f"{where}: {error.json_path}: {_schema_message(error)}"))


def validate_manifest(manifest: Any, where: str) -> Dict[str, Any]:
    """`manifest` if its structure matches MANIFEST_SCHEMA and it is consistent with
    itself (see `_check_consistency`); else an ArtifactError naming `where`, the JSON
    path and what is wrong, on one line."""
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: not a prepro manifest (it is {_json_type(manifest)}, not an object)")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(one_line(f"{where}: not a prepro manifest (format={_short(manifest.get('format'))})"))
    if manifest.get("format_version") not in READABLE_VERSIONS or isinstance(manifest["format_version"], bool):
        raise ArtifactError(one_line(
            f"{where}: format version {_short(manifest.get('format_version'))}; this prepro reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Re-run the analyze job or upgrade prepro."))
    check_schema(manifest, MANIFEST_SCHEMA, where)
    _check_consistency(manifest, where)
    return manifest


def _schema_message(error) -> str:
    """What is wrong, in a few words: jsonschema's own messages quote whole instances."""
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "type":
        wanted = value if isinstance(value, list) else [value]
        return f"expected {' or '.join(_JSON_TYPE_NAMES.get(t, t) for t in wanted)}, got {_json_type(instance)}"
    if kind == "pattern":
        return f"{_short(instance)} is not {_PATTERN_MEANINGS.get(value, 'allowed here')}"
    if kind == "additionalProperties":
        extra = sorted(set(instance) - set(error.schema.get("properties", {})))
        return f"unexpected key(s) {_short(extra)}"
    if kind == "not" and value == {}:
        return "not allowed here" + _NOT_ALLOWED_WHY.get(error.json_path, "")
    if kind in ("maxItems", "maxProperties", "maxLength"):
        return f"longer than {value}"
    if kind in ("minItems", "minProperties", "minLength"):
        return f"shorter than {value}"
    if kind in ("enum", "const"):
        allowed = value if kind == "enum" else [value]
        return f"{_short(instance)} is not one of {_short(allowed, 300)}"
    return error.message


_NOT_ALLOWED_WHY = {"$.state_dir": " (state_dir is for format versions 2 and 3)",
                    "$.spec": " (format version 3 keeps each feature's config in its entry, not in a spec copy)"}
_JSON_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
                    "number": "a number", "boolean": "a boolean", "null": "null"}


def _json_type(value: Any) -> str:
    for python, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                         (list, "a list"), (dict, "an object"), (type(None), "null")):
        if isinstance(value, python):
            return name
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: str, limit: int = 1000) -> str:
    """A message safe to print as one line: control characters and lone surrogates
    escaped, at most `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_consistency(manifest: Dict[str, Any], where: str) -> None:
    """What a schema cannot say: the spec parses, each state fits its feature's spec,
    and every file a state or the golden rows name is listed in `files` (so it has a
    checksum). In versions 1 and 2, the feature entries must also be the spec copy's."""
    at_spec = "$.spec" if manifest["format_version"] < 3 else "$.features"
    try:
        spec = spec_lib.spec_from_dict(spec_dict(manifest), where=at_spec)
    except spec_lib.SpecError as e:
        raise ArtifactError(one_line(f"{where}: {e}")) from None
    if manifest["format_version"] < 3:
        _check_spec_copy(manifest, spec, where)
    for name, entry in sorted(manifest["features"].items()):
        _check_state(spec.features[name], entry["state"], f"{where}: $.features.{name}")
        if "profile" in entry and entry["layer"] == "Discretization":
            _check_quantile_profile(entry, f"{where}: $.features.{name}")
        learned = entry["layer"] in ("TextVectorization", "StringLookup", "IntegerLookup") or \
            "boundaries_file" in entry["state"]
        if manifest["format_version"] >= 4 and learned and "profile" not in entry:
            raise ArtifactError(f"{where}: $.features.{name}: no profile, which format version 4 records for "
                                f"every learned {entry['layer']}")
    listed = manifest["files"]
    for at, relpath in _file_references(manifest):
        if relpath not in listed:
            raise ArtifactError(f"{where}: {at}: {relpath!r} is not listed in files (so it has no checksum)")


def _check_spec_copy(manifest: Dict[str, Any], spec: spec_lib.Spec, where: str) -> None:
    if set(manifest["features"]) != set(spec.features):
        raise ArtifactError(one_line(
            f"{where}: $.features: features {sorted(manifest['features'])} are not the spec's "
            f"{sorted(spec.features)}"))
    for name, entry in sorted(manifest["features"].items()):
        described = {k: v for k, v in entry.items() if k not in RESULT_KEYS}
        if _canonical(described) != _canonical(manifest["spec"]["features"][name]):
            raise ArtifactError(f"{where}: $.features.{name}: its source, layer and options differ from the "
                                f"spec's entry for {name!r}")


def _canonical(value: Any) -> str:
    """Equality that tells 1 from 1.0 and true (Python's == does not)."""
    return json.dumps(value, sort_keys=True)


def _check_state(feature: spec_lib.FeatureSpec, state: Dict[str, Any], at: str) -> None:
    if feature.layer in ("TextVectorization", "StringLookup", "IntegerLookup"):
        if state["token_start"] != spec_lib.token_start(feature):
            raise ArtifactError(f"{at}.state.token_start: {state['token_start']}, but the spec's options "
                                f"reserve {spec_lib.token_start(feature)} indices")
        limit = spec_lib.max_learned_tokens(feature)
        if limit is not None and state["vocabulary_size"] > limit:
            raise ArtifactError(f"{at}.state.vocabulary_size: {state['vocabulary_size']} tokens, more than "
                                f"max_tokens leaves room for ({limit})")
        if spec_lib.needs_document_frequencies(feature) and "document_frequencies_file" not in state:
            raise ArtifactError(f"{at}.state: no document_frequencies_file, which the spec's options need")
        if ("token_state_file" in state) != ("token_state_rows" in state):
            raise ArtifactError(f"{at}.state: token_state_file and token_state_rows go together")
        if state.get("token_state_rows", state["vocabulary_size"]) < state["vocabulary_size"]:
            raise ArtifactError(f"{at}.state.token_state_rows: {state['token_state_rows']}, fewer than the "
                                f"{state['vocabulary_size']} tokens of the vocabulary it holds")
        ranks = [rank for rank, _ in state["exceptions"]]
        if ranks != sorted(set(ranks)) or any(r >= state["vocabulary_size"] for r in ranks):
            raise ArtifactError(f"{at}.state.exceptions: ranks must be distinct, increasing and below "
                                f"vocabulary_size ({state['vocabulary_size']})")
    elif feature.layer == "Normalization":
        kept = [(1, *feature.element_shape)[a] for a in spec_lib.normalization_axes(feature)]
        if state["shape"] != kept:
            raise ArtifactError(f"{at}.state.shape: {state['shape']}, but the spec's axis keeps {kept}")
    elif feature.layer == "Discretization":
        bins = feature.options["num_bins"]
        if ("boundaries_file" in state) != (bins is not None):
            raise ArtifactError(f"{at}.state: learned boundaries go with num_bins, config ones with bin_boundaries")
        if bins is not None and state["num_boundaries"] != bins - 1:
            raise ArtifactError(f"{at}.state.num_boundaries: {state['num_boundaries']}, but num_bins is {bins}")
        if ("quantile_state_file" in state) != ("quantile_state_rows" in state):
            raise ArtifactError(f"{at}.state: quantile_state_file and quantile_state_rows go together")
        if bins is not None and (("quantile_state_file" in state and state["quantiles"] != "exact")
                                 or ("quantile_sketch_file" in state and state["quantiles"] != "sketch")):
            raise ArtifactError(f"{at}.state: a kept quantile state of the other kind than quantiles "
                                f"{state['quantiles']!r}")


def _check_quantile_profile(entry: Dict[str, Any], at: str) -> None:
    """A profile only beside learned boundaries; moments null exactly when no value counted."""
    if "boundaries_file" not in entry["state"]:
        raise ArtifactError(f"{at}.profile: a profile, but the boundaries come from the config (nothing learned)")
    moments = entry["profile"]["moments"]
    if (moments["count"] == 0) != (moments["mean"] is None) or (moments["count"] == 0) != (moments["variance"] is None):
        raise ArtifactError(f"{at}.profile.moments: mean and variance must be null exactly when count is 0")
    for key in ("mean", "variance"):
        if moments[key] is not None and not (math.isfinite(moments[key]) and (key == "mean" or moments[key] >= 0)):
            raise ArtifactError(f"{at}.profile.moments.{key}: {moments[key]}, not a finite number"
                                + (" >= 0" if key == "variance" else ""))


def _file_references(manifest: Mapping[str, Any]) -> Iterator[tuple]:
    """(JSON path, relative path) of every file the manifest's features and golden rows name."""
    for name, entry in sorted(manifest["features"].items()):
        for part in RESULT_KEYS:
            for key, value in sorted(entry.get(part, {}).items()):
                if key.endswith("_file"):
                    yield f"$.features.{name}.{part}.{key}", value
    for key in ("rows_file", "expected_file"):
        if key in manifest.get("golden", {}):
            yield f"$.golden.{key}", manifest["golden"][key]
    if "kept_state" in manifest:
        yield "$.kept_state.golden_candidates_file", manifest["kept_state"]["golden_candidates_file"]
