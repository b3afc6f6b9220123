"""Fuzzing the manifest loader (issue 13, item 6): a real, valid manifest (versions 1 and
2) mutated by hypothesis - keys dropped, values of other types, random JSON, paths
injected (traversals, absolute paths, symlinks out of the artifact, a canary file
outside it, with its true checksum), random bytes.

`prepro.load` and `prepro inspect` must agree: both succeed (and then every accessor
works or raises ArtifactError, and the manifest obeys the path rules checked here
independently) or both fail with one ArtifactError line. No other exception, and no
file outside the artifact is ever opened: a Python audit hook records every open.

Bounded in the suite (the "ci" hypothesis profile); `PREPRO_FUZZ=long` runs many more.
Crashes found become the named regression tests at the end.
"""

import contextlib
import copy
import io
import json
import os
import sys

import pytest
from hypothesis import event, given, note, settings, strategies as st
from hypothesis.control import currently_in_test_context

import prepro
import prepro.profile  # noqa: F401  (imported before opens are recorded: the profile accessors use it)
from artifact_fixtures import (STATE_DIR, copy_artifact, read_manifest_json, real_artifact, to_version_2,
                               to_version_3)
from pipelines import cli
from prepro import artifacts
from prepro.artifacts import ArtifactError

_opened = []
_recording = [False]


def _audit(event, args):
    if _recording[0] and event == "open" and isinstance(args[0], (str, bytes)):
        _opened.append(os.fsdecode(args[0]))


@contextlib.contextmanager
def recording_opens():
    """Every file Python opens (io.open, os.open) while inside."""
    _opened.clear()
    _recording[0] = True
    try:
        yield _opened
    finally:
        _recording[0] = False


class Fuzz:
    """Two artifacts (v1, v2) sharing nothing, a canary outside both, and symlinks in
    each that lead out (to the canary, to a directory holding it) or stay inside."""

    def __init__(self, base, original):
        self.base = str(base)
        flight = open(os.path.join(original, "flight/vocabulary.txt"), "rb").read()
        self.canary = os.path.join(self.base, "canary.txt")  # a valid vocabulary: only its place is wrong
        with open(self.canary, "wb") as f:
            f.write(flight)
        os.makedirs(os.path.join(self.base, "outside"))
        os.symlink(self.canary, os.path.join(self.base, "outside", "canary.txt"))
        self.canary_entry = artifacts.file_entry(flight)
        self.roots = {1: copy_artifact(original, os.path.join(self.base, "v1")),
                      2: to_version_2(copy_artifact(original, os.path.join(self.base, "v2"))),
                      3: to_version_3(copy_artifact(original, os.path.join(self.base, "v3")))}
        self.manifests = {}
        for version, root in self.roots.items():
            state = os.path.join(root, STATE_DIR) if version > 1 else root
            os.symlink(self.canary, os.path.join(state, "flight", "link_out.txt"))
            os.symlink(os.path.join(self.base, "outside"), os.path.join(state, "link_dir"))
            os.symlink("vocabulary.txt", os.path.join(state, "flight", "link_in.txt"))
            self.manifests[version] = read_manifest_json(root)
        self.manifest_bytes = {v: open(os.path.join(r, "manifest.json"), "rb").read() for v, r in self.roots.items()}

    def paths(self):
        """Paths a mutation may put where a file path goes."""
        return st.sampled_from([
            self.canary, "../canary.txt", "../../canary.txt", "flight/../../canary.txt",
            "flight/../../../canary.txt", "flight/link_out.txt", "link_dir/canary.txt", "flight/link_in.txt",
            "/etc/passwd", "/dev/zero", "flight\\..\\..\\canary.txt", "flight/vocabulary.txt\x00",
            "flight/vocabulary.txt\n", ".", "..", "", "/", "flight//vocabulary.txt", "./flight/vocabulary.txt",
            "C:\\canary.txt", "C:/canary.txt", "flight/vocabulary.txt", "golden/rows.json", "manifest.json",
            f"{STATE_DIR}/flight/vocabulary.txt", "flight", "flight/", "distance/mean.txt",
        ]) | st.text(max_size=30)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    if _audit not in _hooks:
        sys.addaudithook(_audit)
        _hooks.append(_audit)
    made = Fuzz(tmp_path_factory.mktemp("fuzz"), real_artifact(tmp_path_factory))
    for root in made.roots.values():  # imports and caches warmed up: later opens are the loader's
        _check(made, root)
    return made


_hooks = []

_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
    | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=8)


def _nodes(value, prefix=()):
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _nodes(child, prefix + (key,))


def _parent(manifest, path):
    node = manifest
    for key in path[:-1]:
        node = node[key]
    return node


def _retyped(old):
    return [str(old), [old], {"v": old}, None, True, False, -1, 0, 2 ** 63, 1.5, float("nan"), float("inf"), ""]


def mutate(data, fuzz, manifest):
    """1-4 mutations, each recorded with `note` (hypothesis prints them on failure)."""
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        nodes = [p for p in _nodes(manifest) if p]
        action = data.draw(st.sampled_from(["delete", "replace", "retype", "path", "rename", "inject", "reference"]))
        path = data.draw(st.sampled_from(nodes)) if nodes else ()
        note(f"{action} at {path!r}")
        if not path and action not in ("inject", "reference"):
            continue
        parent = _parent(manifest, path) if path else None
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = data.draw(JSON_VALUES)
        elif action == "retype":
            parent[path[-1]] = data.draw(st.sampled_from(_retyped(parent[path[-1]])))
        elif action == "path":
            parent[path[-1]] = data.draw(fuzz.paths())
        elif action == "rename" and isinstance(parent, dict):
            parent[data.draw(fuzz.paths())] = parent.pop(path[-1])
        elif action in ("inject", "reference"):
            # A path with the canary's true checksum in files, named by a state
            # reference: only the path and symlink rules keep the canary unread.
            injected = data.draw(fuzz.paths())
            if isinstance(manifest.get("files"), dict):
                manifest["files"][injected] = dict(fuzz.canary_entry)
            references = [p for p in _nodes(manifest) if p and isinstance(p[-1], str) and p[-1].endswith("_file")]
            if references:
                target = data.draw(st.sampled_from(references))
                _parent(manifest, target)[target[-1]] = injected
                note(f"  {injected!r} at {target!r}")
    return manifest


def _write(root, data: bytes):
    with open(os.path.join(root, "manifest.json"), "wb") as f:
        f.write(data)


def _check(fuzz, root):
    """The property: load and inspect agree, fail only with ArtifactError, read inside
    the artifact only, and a loaded manifest obeys the rules."""
    real_root = os.path.realpath(root)
    with recording_opens() as opened:
        try:
            arts = prepro.load(root)
        except ArtifactError as e:
            arts = None
            assert "\n" not in str(e)
            _event(_kind_of_refusal(str(e)))
        readable = True
        if arts is not None:
            _event("loaded")
            readable = _use(arts)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["inspect", root])
    outside = [p for p in opened if os.path.commonpath([real_root, os.path.realpath(p)]) != real_root]
    assert not outside, f"opened outside the artifact: {outside}"
    if arts is not None and not readable and code == 1:  # inspect parsed the file an accessor could not
        assert err.getvalue().startswith("prepro inspect: error: ") and err.getvalue().count("\n") == 1, err.getvalue()
    elif arts is None:
        assert code == 1 and out.getvalue() == "", out.getvalue()
        assert err.getvalue().startswith("prepro inspect: error: ") and err.getvalue().count("\n") == 1, err.getvalue()
    else:
        assert code == 0 and "checksums OK" in out.getvalue(), err.getvalue()
        _obeys_the_rules(arts.manifest)
    return arts


def _event(text: str) -> None:
    if currently_in_test_context():  # not in the fixture's warm-up
        event(text)


def _kind_of_refusal(message: str) -> str:
    """A few words saying why, for hypothesis's statistics (--hypothesis-show-statistics)."""
    for words in ("outside the artifact", "not listed in files", "unreadable JSON", "does not match",
                  "not a prepro manifest", "format version", "spec's", "is not a relative path",
                  "not a regular file", "missing"):
        if words in message:
            return "refused: " + words
    return "refused: schema or consistency"


def _use(arts) -> bool:
    """Every accessor that reads state without building a Keras layer; whether all of
    them could read it (a reference to another listed file passes its checksum and fails
    only when parsed, which `prepro inspect` does too)."""
    readable = True
    for name in arts.features:
        entry = arts.manifest["features"][name]
        try:
            arts.figures(name)
            if "vocabulary_file" in entry["state"]:
                arts.vocabulary(name)
            if "document_frequencies_file" in entry["state"]:
                arts.document_frequencies(name)
            if "mean_file" in entry["state"]:
                arts.moments(name)
            if "boundaries_file" in entry["state"]:
                arts.bin_boundaries(name)
            if "counts_file" in entry.get("profile", {}):
                arts.token_counts(name)
            if "quantiles_file" in entry.get("profile", {}):
                arts.quantile_profile(name)
        except ArtifactError as e:
            assert "\n" not in str(e)
            readable = False
    return readable


def _obeys_the_rules(manifest):
    """Checked independently of the schema: what a loaded manifest may name."""
    def safe(path):
        parts = path.split("/")
        return (path and not path.startswith("/") and "\\" not in path and "\x00" not in path
                and all(p not in ("", ".", "..") for p in parts) and ":" not in path)
    references = [state[key] for entry in manifest["features"].values() for state in [entry["state"]]
                  for key in state if key.endswith("_file")]
    references += [manifest["golden"][k] for k in ("rows_file", "expected_file") if k in manifest.get("golden", {})]
    assert all(safe(p) for p in list(manifest["files"]) + references)
    assert set(references) <= set(manifest["files"])
    version = manifest["format_version"]
    assert version in (1, 2, 3) and ("state_dir" in manifest) == (version > 1) and ("spec" in manifest) == (version < 3)
    assert version == 3 or set(manifest["features"]) == set(manifest["spec"]["features"])
    assert all(e["layer"] in prepro.spec.LAYER_DEFAULTS for e in manifest["features"].values())


@given(data=st.data())
def test_fuzz_mutated_manifest(fuzz, data):
    version = data.draw(st.sampled_from([1, 2, 3]), label="version")
    manifest = mutate(data, fuzz, copy.deepcopy(fuzz.manifests[version]))
    _write(fuzz.roots[version], json.dumps(manifest).encode("utf-8"))
    _check(fuzz, fuzz.roots[version])


@given(data=st.data())
def test_fuzz_injected_paths(fuzz, data):
    """Only path injections, several at once: the canary is never read."""
    version = data.draw(st.sampled_from([1, 2, 3]), label="version")
    manifest = copy.deepcopy(fuzz.manifests[version])
    references = [p for p in _nodes(manifest) if p and isinstance(p[-1], str) and p[-1].endswith("_file")]
    for target in data.draw(st.lists(st.sampled_from(references), min_size=1, max_size=3)):
        injected = data.draw(fuzz.paths())
        _parent(manifest, target)[target[-1]] = injected
        if data.draw(st.booleans()):
            manifest["files"][injected] = dict(fuzz.canary_entry)
    _write(fuzz.roots[version], json.dumps(manifest).encode("utf-8"))
    arts = _check(fuzz, fuzz.roots[version])
    if arts is not None:  # loaded: every injected path was a harmless one inside the artifact
        assert {p for _, p in artifacts._file_references(arts.manifest)} <= set(arts.manifest["files"])


@given(data=st.data())
def test_fuzz_manifest_bytes(fuzz, data):
    """Random byte edits of the canonical manifest: mostly unreadable JSON, sometimes a
    changed value; either way, a clean outcome."""
    version = data.draw(st.sampled_from([1, 2, 3]), label="version")
    raw = bytearray(fuzz.manifest_bytes[version])
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        at = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        chunk = data.draw(st.binary(min_size=1, max_size=8))
        if op == "replace":
            raw[at:at + len(chunk)] = chunk
        elif op == "insert":
            raw[at:at] = chunk
        elif op == "delete":
            del raw[at:at + len(chunk)]
        else:
            del raw[at:]
    _write(fuzz.roots[version], bytes(raw))
    _check(fuzz, fuzz.roots[version])


def _same_option_in_spec_and_feature(data, manifest):
    """A layer option changed (or removed) alike in the spec copy and the feature, so the
    manifest stays self-consistent and the value reaches the spec parser, the state
    checks and Keras."""
    name = data.draw(st.sampled_from(sorted(manifest["features"])), label="feature")
    layer = manifest["features"][name]["layer"]
    key = data.draw(st.sampled_from(sorted({*prepro.spec.LAYER_DEFAULTS[layer], "name", "dtype"})) | _TEXT,
                    label="option")
    current = manifest["features"][name]["config"].get(key)
    value = data.draw(st.just(None) | JSON_VALUES | st.sampled_from(_retyped(current)), label="value")
    delete = data.draw(st.booleans(), label="delete")
    copies = [manifest["spec"]["features"][name]] if "spec" in manifest else []  # versions 1 and 2
    for entry in copies + [manifest["features"][name]]:
        config = entry.setdefault("config", {})
        if delete:
            config.pop(key, None)
        else:
            config[key] = value
    return name


@settings(max_examples=max(10, settings().max_examples // 4))  # builds Keras layers: slower
@given(data=st.data())
def test_fuzz_layer_options(fuzz, data):
    """Options the spec parser accepts reach Keras: a layer, or an ArtifactError."""
    version = data.draw(st.sampled_from([1, 2, 3]), label="version")
    manifest = copy.deepcopy(fuzz.manifests[version])
    name = _same_option_in_spec_and_feature(data, manifest)
    _write(fuzz.roots[version], json.dumps(manifest).encode("utf-8"))
    arts = _check(fuzz, fuzz.roots[version])
    if arts is None:
        return
    try:
        arts.layer(name)
        _event("layer built")
    except ArtifactError as e:
        assert "\n" not in str(e)
        _event("layer refused")
    except ValueError as e:  # a callable named in the spec must be passed by the caller
        assert "custom_objects" in str(e), e


def test_the_valid_manifests_load(fuzz):
    """The fuzzer's starting points are valid, so a mutation that keeps them valid loads."""
    for version, root in fuzz.roots.items():
        _write(root, fuzz.manifest_bytes[version])
        assert _check(fuzz, root) is not None

