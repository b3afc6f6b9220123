"""Reading an artifact trusts nothing in its directory (issue 13, item 2).

Every attack runs against a copy of a real artifact made by the real job: paths that
leave the artifact, files not listed in the manifest, symlinks out of it, special files
(which must fail at once, never hang: each such read runs under a timeout), malformed
manifests, Keras classes outside the allow-list, files changed between `prepro.load` and
`.layer()`, and what `prepro inspect` / `prepro verify` say. Versions 1 and 2 of the
format are both read.
"""

import json
import os
import socket
import threading

import numpy as np
import pytest

import prepro
import prepro.golden
from artifact_fixtures import (STATE_DIR, copy_artifact, read_manifest_json, real_artifact, state_path,
                               to_version_2, to_version_3, write_manifest_json)
from pipelines import cli
from prepro import artifacts
from prepro.artifacts import ArtifactError

TIMEOUT = 20  # seconds; a read that blocks fails the test instead of hanging the suite


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return real_artifact(tmp_path_factory)


@pytest.fixture(params=[1, 2, 3], ids=["v1", "v2", "v3"])
def arts_dir(request, original, tmp_path):
    """A fresh copy of the real artifact, as format version 1, 2 and 3."""
    root = copy_artifact(original, tmp_path / "artifact")
    return {1: lambda r: r, 2: to_version_2, 3: to_version_3}[request.param](root)


@pytest.fixture
def v1_dir(original, tmp_path):
    return copy_artifact(original, tmp_path / "artifact")


def within(seconds, fn, *args):
    """fn(*args) in a thread: (result, exception); fails the test if it has not returned
    within `seconds` (a blocking read), without blocking the suite."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: B902 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} still running after {seconds} s: it blocked"
    return box.get("result"), box.get("error")


def load_error(root, *, verify=True) -> ArtifactError:
    _, error = within(TIMEOUT, lambda: prepro.load(root, verify=verify))
    assert isinstance(error, ArtifactError), f"expected ArtifactError, got {error!r}"
    message = str(error)
    assert "\n" not in message and len(message) <= 1000, message
    return error


def edit_manifest(root, edit):
    manifest = read_manifest_json(root)
    edit(manifest)
    write_manifest_json(root, manifest)


def canary(tmp_path, data=b"secret\n"):
    """A file outside the artifact that must never be read."""
    path = tmp_path / "outside" / "canary.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return str(path)


# ------------------------------------------------------------------ the valid artifact

def test_both_versions_load_and_build_the_same_layers(original, tmp_path):
    v1 = prepro.load(original)
    v2 = prepro.load(to_version_2(copy_artifact(original, tmp_path / "v2")))
    assert v2.manifest["state_dir"] == STATE_DIR and v2.state_root.endswith(STATE_DIR)
    for name in ("review", "carrier", "flight"):
        assert v1.layer(name).get_vocabulary() == v2.layer(name).get_vocabulary()
    assert "x\ny" in v1.vocabulary("carrier")  # the exception, re-inserted at its rank
    np.testing.assert_array_equal(v1.moments("distance")[0], v2.moments("distance")[0])
    assert v1.bin_boundaries("delay") == v2.bin_boundaries("delay") and len(v1.bin_boundaries("delay")) == 3
    np.testing.assert_array_equal(v1.idf_weights("review_tfidf"), v2.idf_weights("review_tfidf"))
    assert prepro.golden.verify(v2).ok


def test_a_symlink_inside_the_artifact_to_a_file_inside_it_is_followed(arts_dir):
    vocabulary = state_path(arts_dir, "flight/vocabulary.txt")
    os.rename(vocabulary, vocabulary + ".real")
    os.symlink("vocabulary.txt.real", vocabulary)
    arts = prepro.load(arts_dir)
    assert arts.layer("flight").vocabulary_size() == 10  # 9 flights + OOV


# ------------------------------------------------------------------ paths out of the artifact

OUTSIDE_PATHS = {
    "parent traversal": "../../outside/canary.txt",
    "absolute": "/etc/passwd",
    "backslashes": "flight\\..\\..\\outside\\canary.txt",
    "NUL": "flight/vocabulary.txt\x00.png",
    "dot-dot inside": "flight/../flight/vocabulary.txt",
    "dot": "./flight/vocabulary.txt",
    "empty component": "flight//vocabulary.txt",
    "trailing newline": "flight/vocabulary.txt\n",
    "drive letter": "C:/flight/vocabulary.txt",
    "empty": "",
}


@pytest.mark.parametrize("path", list(OUTSIDE_PATHS.values()), ids=list(OUTSIDE_PATHS))
def test_a_state_path_that_could_leave_the_artifact_is_refused(arts_dir, tmp_path, path):
    """The manifest lists the path with the true digest of what it would read, so only
    the path rule stands between the reader and the file."""
    target = canary(tmp_path, (open(state_path(arts_dir, "flight/vocabulary.txt"), "rb").read()))
    entry = artifacts.file_entry(open(target, "rb").read())

    def edit(m):
        m["features"]["flight"]["state"]["vocabulary_file"] = path
        m["files"][path] = entry
    edit_manifest(arts_dir, edit)
    error = load_error(arts_dir)
    assert "vocabulary_file" in str(error) or "$.files" in str(error)


def test_a_state_reference_not_listed_in_files_is_refused(arts_dir):
    """A file inside the artifact, but without a checksum: never read."""
    extra = state_path(arts_dir, "flight/extra.txt")
    with open(extra, "w") as f:
        f.write("1\n2\n")
    edit_manifest(arts_dir, lambda m: m["features"]["flight"]["state"].update(vocabulary_file="flight/extra.txt"))
    error = load_error(arts_dir)
    assert "'flight/extra.txt' is not listed in files" in str(error)


def test_a_golden_file_not_listed_in_files_is_refused(arts_dir):
    edit_manifest(arts_dir, lambda m: m["golden"].update(rows_file="golden/other.json"))
    assert "$.golden.rows_file" in str(load_error(arts_dir))


def test_a_listed_file_that_is_a_symlink_out_of_the_artifact_is_refused(arts_dir, tmp_path):
    """Same bytes, same checksum: still refused, because it is outside the artifact."""
    vocabulary = state_path(arts_dir, "flight/vocabulary.txt")
    outside = canary(tmp_path, open(vocabulary, "rb").read())
    os.remove(vocabulary)
    os.symlink(outside, vocabulary)
    error = load_error(arts_dir)
    assert "outside the artifact" in str(error) and "flight/vocabulary.txt" in str(error)


def test_a_directory_symlinked_out_of_the_artifact_is_refused(arts_dir, tmp_path):
    directory = os.path.dirname(state_path(arts_dir, "flight/vocabulary.txt"))
    outside = tmp_path / "outside_flight"
    os.rename(directory, outside)
    os.symlink(outside, directory)
    assert "outside the artifact" in str(load_error(arts_dir))


def test_a_state_directory_symlinked_out_of_the_artifact_is_refused(original, tmp_path):
    root = to_version_2(copy_artifact(original, tmp_path / "artifact"))
    os.rename(os.path.join(root, STATE_DIR), tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", os.path.join(root, STATE_DIR))
    assert "outside the artifact" in str(load_error(root))


@pytest.mark.parametrize("state_dir", ["../state-0123456789abcdef", "/tmp", "state-0123456789ABCDEF", "state-1",
                                       "state-0123456789abcdef/..", "."])
def test_a_state_dir_that_is_not_a_state_directory_name_is_refused(original, tmp_path, state_dir):
    root = to_version_2(copy_artifact(original, tmp_path / "artifact"))
    edit_manifest(root, lambda m: m.update(state_dir=state_dir))
    assert "$.state_dir" in str(load_error(root))


def test_a_manifest_symlinked_out_of_the_artifact_is_refused(v1_dir, tmp_path):
    outside = canary(tmp_path, open(os.path.join(v1_dir, "manifest.json"), "rb").read())
    os.remove(os.path.join(v1_dir, "manifest.json"))
    os.symlink(outside, os.path.join(v1_dir, "manifest.json"))
    assert "outside the artifact" in str(load_error(v1_dir))


def test_a_file_only_reachable_through_the_state_directory_of_version_1_is_not_read(original, tmp_path):
    """Version 1 paths are relative to the root: a v1 manifest cannot name `state_dir`."""
    root = to_version_2(copy_artifact(original, tmp_path / "artifact"))
    edit_manifest(root, lambda m: m.update(format_version=1))
    assert "$.state_dir" in str(load_error(root))


# ------------------------------------------------------------------ special files never block

SPECIAL_FILES = {  # kind: (how to make it, what the one-line error says)
    "fifo": (os.mkfifo, "is a FIFO, not a regular file"),
    "dev_zero": (lambda path: os.symlink("/dev/zero", path), "outside the artifact"),
    "directory": (os.mkdir, "is a directory, not a regular file"),
}


@pytest.mark.parametrize("kind", list(SPECIAL_FILES))
@pytest.mark.parametrize("relpath", ["flight/vocabulary.txt", "delay/boundaries.txt"])
def test_a_state_file_that_is_not_a_regular_file_fails_at_once(arts_dir, kind, relpath):
    make, message = SPECIAL_FILES[kind]
    path = state_path(arts_dir, relpath)
    os.remove(path)
    make(path)
    assert message in str(load_error(arts_dir))
    # Without the up-front pass, the layer's own read refuses it just as fast.
    _, error = within(TIMEOUT, prepro.load(arts_dir, verify=False).layer, relpath.split("/")[0])
    assert isinstance(error, ArtifactError) and message in str(error), error


def test_a_socket_where_a_state_file_should_be_is_refused(arts_dir):
    directory, name = os.path.split(state_path(arts_dir, "distance/variance.txt"))
    os.remove(os.path.join(directory, name))
    server = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(directory)  # a relative name: socket paths are limited to ~108 bytes
    try:
        server.bind(name)
    finally:
        os.chdir(cwd)
    try:
        assert "is a socket, not a regular file" in str(load_error(arts_dir))
    finally:
        server.close()


def test_a_device_file_is_refused_without_being_opened():
    """Devices outside the artifact are refused by the path rule first; the kind check
    itself, on a real device (creating one inside an artifact needs root)."""
    with pytest.raises(ArtifactError, match="is a character device, not a regular file"):
        artifacts._open_confined("/dev", "/dev/null")


def test_a_device_node_inside_the_artifact_is_refused(arts_dir):
    vocabulary = state_path(arts_dir, "flight/vocabulary.txt")
    os.remove(vocabulary)
    try:
        os.mknod(vocabulary, 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError:
        pytest.skip("creating a device node needs root; test_a_device_file_is_refused_without_being_opened "
                    "checks the same rule on /dev/null")
    assert "is a character device" in str(load_error(arts_dir))


@pytest.mark.parametrize("kind", list(SPECIAL_FILES))
def test_a_manifest_that_is_not_a_regular_file_fails_at_once(v1_dir, kind):
    make, message = SPECIAL_FILES[kind]
    manifest = os.path.join(v1_dir, "manifest.json")
    os.remove(manifest)
    make(manifest)
    assert message in str(load_error(v1_dir))


def test_a_huge_manifest_is_refused_before_it_is_read(v1_dir):
    with open(os.path.join(v1_dir, "manifest.json"), "r+b") as f:
        f.truncate(artifacts.MAX_MANIFEST_BYTES + 1)  # sparse: no disk, no time
    assert "larger than 256 MB" in str(load_error(v1_dir))


# ------------------------------------------------------------------ malformed manifests

def _set(path, value):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _delete(path):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


MALFORMED = {
    # name: (edit of the parsed manifest, text the one-line error must contain)
    "files as strings": (_set(["files"], {"flight/vocabulary.txt": "abc"}), "$.files['flight/vocabulary.txt']: expected an object, got a string"),
    "files as a list": (_set(["files"], ["flight/vocabulary.txt"]), "$.files: expected an object, got a list"),
    "no features": (_delete(["features"]), "'features' is a required property"),
    "features as a list": (_set(["features"], []), "$.features: expected an object"),
    "feature as a string": (_set(["features", "flight"], "IntegerLookup"), "$.features.flight: expected an object"),
    "no vocabulary_file": (_delete(["features", "flight", "state", "vocabulary_file"]), "'vocabulary_file' is a required property"),
    "size as a string": (_set(["features", "flight", "state", "vocabulary_size"], "9"), "vocabulary_size: expected an integer, got a string"),
    "size as a float": (_set(["features", "flight", "state", "vocabulary_size"], 9.0), "vocabulary_size: expected an integer, got a number"),
    "size as a boolean": (_set(["features", "flight", "state", "token_start"], True), "token_start: expected an integer, got a boolean"),
    "negative size": (_set(["features", "flight", "state", "vocabulary_size"], -1), "less than the minimum of 0"),
    "size beyond bounds": (_set(["features", "flight", "state", "vocabulary_size"], 2 ** 40), "greater than the maximum"),
    "NaN size": (_set(["features", "distance", "state", "count"], float("nan")), "count: expected an integer, got a number"),
    "shape of strings": (_set(["features", "distance", "state", "shape"], ["1"]), "shape[0]: expected an integer"),
    "exceptions as an object": (_set(["features", "carrier", "state", "exceptions"], {}), "exceptions: expected a list"),
    "exception token not base64": (_set(["features", "carrier", "state", "exceptions"], [[0, {"b64": "!!"}]]), "is not base64"),
    "bytes negative": (lambda m: next(iter(m["files"].values())).update(bytes=-5), "less than the minimum of 0"),
    "sha256 in capitals": (lambda m: m["files"]["flight/vocabulary.txt"].update(sha256="A" * 64), "is not a SHA-256"),
    "extra file entry key": (lambda m: m["files"]["flight/vocabulary.txt"].update(mode=0o777), "unexpected key(s) ['mode']"),
    "rows_read a string": (_set(["provenance", "rows_read"], "60"), "$.provenance.rows_read: expected an integer"),
    "figures rows a string": (_set(["features", "flight", "figures", "rows"], "x"), "$.features.flight.figures.rows: expected an integer"),
    "top token a list": (_set(["features", "flight", "figures", "top_tokens"], [[[1], 2]]), "top_tokens[0][0]: expected a string or an integer"),
    "unknown top-level key": (_set(["hooks"], {"on_load": "os:system"}), "unexpected key(s) ['hooks']"),
    "state with an extra key": (_set(["features", "flight", "state", "loader"], "pickle"), "unexpected key(s) ['loader']"),
    "layer Lambda": (_set(["features", "flight", "layer"], "Lambda"), "'Lambda' is not one of"),
    "layer keras.layers.Lambda": (_set(["features", "flight", "layer"], "keras.layers.Lambda"), "'keras.layers.Lambda' is not one of"),
    "spec layer Lambda": (_set(["spec", "features", "flight", "layer"], "Lambda"), "$.spec.features.flight.layer: 'Lambda' is not one of"),
    "an object as a layer option": (_set(["features", "passenger", "config", "dtype"],
                                         {"class_name": "Lambda", "config": {"function": "os.system"}}),
                                    "$.features.passenger.config.dtype: expected null or a boolean or a number or a string or a list, got an object"),
    "config differs from the spec's": (_set(["features", "flight", "config"], {"max_tokens": 3}), "differ from the spec's entry for 'flight'"),
    "layer differs from the spec's": (lambda m: [m["features"]["review"].update(layer="StringLookup", config={})],
                                      "differ from the spec's entry for 'review'"),
    "1 for true in the config": (_set(["features", "cabin", "config", "sparse"], 0), "differ from the spec's entry for 'cabin'"),
    "feature not in the spec": (lambda m: m["features"].update(extra=m["features"]["flight"]), "are not the spec's"),
    "spec rejected by the spec parser": (_set(["spec", "features", "flight", "config"], {"max_tokens": 0}), "max_tokens must be greater than 1"),
    "bad feature name": (lambda m: m["features"].update({"../x": m["features"].pop("flight")}), "is not a feature name"),
    "token_start off": (_set(["features", "flight", "state", "token_start"], 0), "token_start: 0, but the spec's options reserve 1"),
    "shape off": (_set(["features", "distance", "state", "shape"], [2]), "shape: [2], but the spec's axis keeps [1]"),
    "boundaries count off": (_set(["features", "delay", "state", "num_boundaries"], 7), "num_boundaries: 7, but num_bins is 4"),
    "tf_idf without frequencies": (_delete(["features", "review_tfidf", "state", "document_frequencies_file"]), "no document_frequencies_file"),
    "exception beyond the vocabulary": (lambda m: m["features"]["carrier"]["state"]["exceptions"][0].__setitem__(0, 99), "ranks must be distinct"),
    "golden rows without files": (_set(["golden"], {"rows": 3}), "'rows_file' is a required property"),
    "unknown format": (_set(["format"], "other.format"), "not a prepro manifest (format='other.format')"),
    "format version 99": (_set(["format_version"], 99), "format version 99; this prepro reads versions 1, 2, 3"),
    "format version as a string": (_set(["format_version"], "1"), "format version '1'"),
    "format version true": (_set(["format_version"], True), "format version True"),
    "format version 1.0": (_set(["format_version"], 1.0), "$.format_version: expected an integer"),
    "version 2 without state_dir": (_set(["format_version"], 2), "'state_dir' is a required property"),
    "version 3 with its files at the root": (_set(["format_version"], 3), "'state_dir' is a required property"),
}


@pytest.mark.parametrize("edit,message", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_manifest_is_one_artifact_error(v1_dir, edit, message):
    edit_manifest(v1_dir, edit)
    error = str(load_error(v1_dir))
    assert error.startswith(os.path.join(v1_dir, "manifest.json") + ": ") and message in error, error


# Version 3 holds each feature's config once, in its entry: what the spec copy checked
# in versions 1 and 2, the entry itself must pass.
MALFORMED_V3 = {
    "a spec copy": (lambda m: m.update(spec={"features": {}}), "$.spec: not allowed here (format version 3 keeps"),
    "config rejected by the spec parser": (_set(["features", "flight", "config"], {"max_tokens": 0}),
                                           "$.features: feature 'flight': max_tokens must be greater than 1"),
    "layer Lambda": (_set(["features", "flight", "layer"], "Lambda"), "$.features.flight.layer: 'Lambda' is not one of"),
    "no source": (_delete(["features", "flight", "source"]), "$.features.flight: 'source' is a required property"),
    "an unknown option": (_set(["features", "flight", "loader"], "pickle"), "unexpected key(s) ['loader']"),
    "no state_dir": (_delete(["state_dir"]), "'state_dir' is a required property"),
    "no features": (_set(["features"], {}), "$.features: shorter than 1"),
    "an option the layer does not take": (_set(["features", "flight", "config", "split"], "whitespace"),
                                          "feature 'flight'"),
}


@pytest.mark.parametrize("edit,message", list(MALFORMED_V3.values()), ids=list(MALFORMED_V3))
def test_a_malformed_version_3_manifest_is_one_artifact_error(original, tmp_path, edit, message):
    root = to_version_3(copy_artifact(original, tmp_path / "artifact"))
    edit_manifest(root, edit)
    error = str(load_error(root))
    assert error.startswith(os.path.join(root, "manifest.json") + ": ") and message in error, error


RAW_MANIFESTS = {
    "a JSON list": (b"[]", "not a prepro manifest (it is a list, not an object)"),
    "a string": (b'"prepro"', "not a prepro manifest"),
    "empty": (b"", "unreadable JSON"),
    "truncated": (None, "unreadable JSON"),
    "invalid UTF-8": (b'{"format": "prepro.artifacts\xff"}', "unreadable JSON: 'utf-8' codec can't decode"),
    "a byte-order mark": (b'\xef\xbb\xbf{}', "unreadable JSON"),
    "nested far too deeply": (b"[" * 200000 + b"]" * 200000, "nested too deeply"),
    "nested deeper than 64": (b'{"format": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper than 64 levels"),
    "an integer of 5000 digits": (b'{"format_version": ' + b"9" * 5000 + b"}", "unreadable JSON"),
    "duplicate keys": (b'{"format": "prepro.artifacts", "format": "x"}', "duplicate keys ['format']"),
}


@pytest.mark.parametrize("data,message", list(RAW_MANIFESTS.values()), ids=list(RAW_MANIFESTS))
def test_a_manifest_that_is_not_a_json_object_is_one_artifact_error(v1_dir, data, message):
    path = os.path.join(v1_dir, "manifest.json")
    if data is None:
        data = open(path, "rb").read()[:-200]
    with open(path, "wb") as f:
        f.write(data)
    assert message in str(load_error(v1_dir))


# ------------------------------------------------------------------ checksummed but malformed content

def test_state_bytes_that_match_their_checksum_but_do_not_parse_are_an_artifact_error(arts_dir):
    """A hand-made artifact can list any bytes with their true checksum: the mean of a
    Normalization read from the vocabulary file does not parse."""
    edit_manifest(arts_dir, lambda m: m["features"]["distance"]["state"].update(mean_file="review/vocabulary.txt"))
    arts = prepro.load(arts_dir)
    with pytest.raises(ArtifactError, match="review/vocabulary.txt: malformed"):
        arts.layer("distance")


def test_a_vocabulary_size_that_does_not_match_the_file_is_an_artifact_error(arts_dir):
    edit_manifest(arts_dir, lambda m: m["features"]["carrier"]["state"].update(vocabulary_size=9))
    with pytest.raises(ArtifactError, match="tokens .exceptions included., but the manifest's vocabulary_size says 9"):
        prepro.load(arts_dir).layer("carrier")


def test_a_vocabulary_keras_refuses_is_an_artifact_error(arts_dir):
    """A consistent artifact whose vocabulary file repeats a token: TensorFlow fails while
    building the table; the user sees an ArtifactError naming the feature."""
    path = state_path(arts_dir, "flight/vocabulary.txt")
    data = open(path, "rb").read()
    data += data.split(b"\n")[0] + b"\n"
    with open(path, "wb") as f:
        f.write(data)
    edit_manifest(arts_dir, lambda m: (m["files"].update({"flight/vocabulary.txt": artifacts.file_entry(data)}),
                                       m["features"]["flight"]["state"].update(vocabulary_size=10)))
    with pytest.raises(ArtifactError, match="feature 'flight': Keras cannot build IntegerLookup from the artifact"):
        prepro.load(arts_dir).layer("flight")


# ------------------------------------------------------------------ what a layer is built from

STATE_FILES = {
    "flight": "flight/vocabulary.txt",            # a path handed to TensorFlow
    "carrier": "carrier/vocabulary.txt",          # read here (an exception token)
    "review_tfidf": "review_tfidf/document_frequencies.txt",
    "distance": "distance/variance.txt",
    "delay": "delay/boundaries.txt",
}


@pytest.mark.parametrize("feature", list(STATE_FILES))
def test_a_state_file_overwritten_between_load_and_layer_is_refused(arts_dir, feature):
    arts = prepro.load(arts_dir)
    path = state_path(arts_dir, STATE_FILES[feature])
    data = open(path, "rb").read()
    with open(path, "wb") as f:  # same size, other bytes: only the SHA-256 tells
        f.write(data[:-2][::-1] + data[-2:])
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        arts.layer(feature)


def test_a_state_file_deleted_or_replaced_by_a_symlink_out_after_load_is_refused(arts_dir, tmp_path):
    arts = prepro.load(arts_dir)
    os.remove(state_path(arts_dir, "carrier/vocabulary.txt"))
    with pytest.raises(ArtifactError, match="listed in the manifest but missing"):
        arts.layer("carrier")
    vocabulary = state_path(arts_dir, "flight/vocabulary.txt")
    outside = canary(tmp_path, open(vocabulary, "rb").read())
    os.remove(vocabulary)
    os.symlink(outside, vocabulary)
    with pytest.raises(ArtifactError, match="outside the artifact"):
        arts.layer("flight")


def test_golden_files_are_checked_when_verify_reads_them(arts_dir):
    arts = prepro.load(arts_dir)
    path = state_path(arts_dir, "golden/expected.json")
    with open(path, "r+b") as f:
        f.seek(5)
        f.write(b"9")
    with pytest.raises(ArtifactError, match="golden/expected.json: size or SHA-256 does not match"):
        prepro.golden.verify(arts)


def test_a_rerun_between_load_and_layer_never_gives_the_new_vocabulary(v1_dir, tmp_path):
    """The issue's scenario: a job re-run into the same directory after `load`. The
    layer is built from the loaded manifest's vocabulary, or refused; never the new one."""
    from conftest import write_jsonl
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    arts = prepro.load(v1_dir)
    before = arts.vocabulary("flight")
    rows = [{"flight": 500 + i % 3, "text": "x"} for i in range(10)]
    spec = {"features": {"flight": {"source": "flight", "layer": "IntegerLookup"}}}
    run_analyze(spec_from_dict(spec), [write_jsonl(tmp_path / "new.jsonl", rows)], "jsonl", v1_dir, golden_rows=0)
    assert sorted(prepro.load(v1_dir).vocabulary("flight")) == [500, 501, 502]
    try:
        layer = arts.layer("flight")
    except ArtifactError as e:
        assert "does not match the manifest" in str(e) or "missing" in str(e)
    else:
        assert layer.get_vocabulary()[1:] == before


def test_a_layer_built_after_a_rerun_in_the_same_process_has_the_new_vocabulary(v1_dir, tmp_path):
    """TensorFlow shares a vocabulary file's table between the layers one process builds
    from the same path: without care, a layer built after a re-run into the same
    directory (a notebook) silently got the table of the old file."""
    from conftest import write_jsonl
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    old = prepro.load(v1_dir).layer("flight")
    old_vocabulary = old.get_vocabulary()
    rows = [{"flight": 100 + (i * 5) % 9} for i in range(40)]  # the same flights, other counts
    spec = {"features": {"flight": {"source": "flight", "layer": "IntegerLookup"}}}
    run_analyze(spec_from_dict(spec), [write_jsonl(tmp_path / "new.jsonl", rows)], "jsonl", v1_dir, golden_rows=0)
    arts = prepro.load(v1_dir)
    new = arts.layer("flight")
    assert new.get_vocabulary()[1:] == arts.vocabulary("flight") != old_vocabulary[1:]
    assert old.get_vocabulary() == old_vocabulary  # the earlier layer keeps its own table


def test_keras_classes_come_from_the_allow_list_only():
    from prepro.layers import keras_class
    assert keras_class("StringLookup").__name__ == "StringLookup"
    for name in ("Lambda", "keras.layers.Lambda", "Layer", "__class__", "TFSMLayer"):
        with pytest.raises(ArtifactError, match="is not one prepro builds"):
            keras_class(name)


def test_artifacts_made_from_a_dict_are_validated_too(original):
    """`Artifacts(root, manifest)` (the golden-row recorder builds one) validates the
    manifest itself: whatever made the dict, accessors rely on its structure."""
    manifest = read_manifest_json(original)
    manifest["features"]["flight"]["state"]["vocabulary_file"] = "../../etc/passwd"
    with pytest.raises(ArtifactError, match="vocabulary_file"):
        prepro.Artifacts(original, manifest)


# ------------------------------------------------------------------ prepro inspect / verify

def test_inspect_says_checksums_ok_only_after_checking_every_file(arts_dir, capsys):
    assert cli.main(["inspect", arts_dir]) == 0
    out = capsys.readouterr().out
    assert f"{len(read_manifest_json(arts_dir)['files'])} files" in out and out.count("checksums OK") == 1
    # A listed file that no feature reads (a golden file) is checked all the same.
    path = state_path(arts_dir, "golden/rows.json")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data.replace(b"p1", b"p7", 1))
    assert cli.main(["inspect", arts_dir]) == 1
    captured = capsys.readouterr()
    assert "checksums OK" not in captured.out
    assert captured.err.startswith("prepro inspect: error: ") and captured.err.count("\n") == 1
    assert "golden/rows.json: size or SHA-256 does not match" in captured.err


def test_inspect_of_a_malformed_manifest_is_one_line(v1_dir, capsys):
    edit_manifest(v1_dir, _set(["features", "flight", "figures", "rows"], "many"))
    assert cli.main(["inspect", v1_dir]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "$.features.flight.figures.rows: expected an integer, got a string" in captured.err


def test_inspect_prints_hostile_text_escaped(v1_dir, capsys):
    """A column name with a terminal escape is printed as text."""
    edit_manifest(v1_dir, lambda m: [entry["flight"].update(source="fl\x1b[2Jight")
                                     for entry in (m["spec"]["features"], m["features"])])  # (a version 1 copy)
    assert cli.main(["inspect", v1_dir]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "fl\\x1b[2Jight" in out


def test_verify_with_a_model_that_cannot_be_loaded_is_one_line(v1_dir, tmp_path, capsys):
    (tmp_path / "garbage.keras").write_bytes(b"not a zip file")
    (tmp_path / "not_saved_model").mkdir()
    for model, says in ((str(tmp_path / "missing.keras"), "no such file or directory"),
                        (str(tmp_path / "garbage.keras"), "cannot load the .keras model: not a zip archive"),
                        (str(tmp_path / "not_saved_model"), "a directory that is not a SavedModel"),
                        (str(tmp_path / "missing_dir"), "no such file or directory")):
        assert cli.main(["verify", v1_dir, "--model", model]) == 2  # cannot check: not a mismatch (1)
        err = capsys.readouterr().err
        assert err.startswith(f"prepro verify: error: {model}: {says}") and err.count("\n") == 1, err


def test_verify_with_a_model_covering_some_features_reports_each(v1_dir, tmp_path, capsys):
    arts = prepro.load(v1_dir)
    prep = arts.preprocessing(["flight", "distance"])
    prep.preprocessing_model().save(str(tmp_path / "part.keras"))
    assert cli.main(["verify", v1_dir, "--model", str(tmp_path / "part.keras")]) == 0
    out = capsys.readouterr().out
    assert "flight                   OK" in out and "distance                 OK" in out
    assert out.count("not in the model (not checked)") == len(arts.features) - 2
    assert f"verify: OK (2 checked, {len(arts.features) - 2} not in the model)" in out
    # Naming a feature the model lacks makes it a failure.
    assert cli.main(["verify", v1_dir, "--model", str(tmp_path / "part.keras"), "--features", "flight,carrier"]) == 1
    out = capsys.readouterr().out
    assert "carrier                  MISSING: not in the model" in out and "verify: FAILED" in out


def test_verify_with_a_model_whose_layer_fails_reports_that_feature(v1_dir, tmp_path, capsys):
    import keras
    arts = prepro.load(v1_dir)
    prep = arts.preprocessing(["flight"])
    # Same name, another kind of layer: it cannot take the flight column.
    wrong = keras.layers.StringLookup(vocabulary=["a"], name=prep.layers["flight"].name)
    inputs = keras.Input(shape=(1,), dtype="string")
    keras.Model(inputs, wrong(inputs)).save(str(tmp_path / "wrong.keras"))
    assert cli.main(["verify", v1_dir, "--model", str(tmp_path / "wrong.keras")]) == 1
    out = capsys.readouterr().out
    assert "flight                   DIFFERS: fails on the golden rows:" in out


def test_verify_with_golden_rows_that_do_not_fit_is_an_artifact_error(v1_dir):
    rows = json.loads(open(state_path(v1_dir, "golden/rows.json")).read())
    for row in rows:
        del row["flight"]
    data = json.dumps(rows).encode()
    with open(state_path(v1_dir, "golden/rows.json"), "wb") as f:
        f.write(data)
    edit_manifest(v1_dir, lambda m: m["files"].update({"golden/rows.json": artifacts.file_entry(data)}))
    with pytest.raises(ArtifactError, match="the golden rows do not fit the features' raw inputs: KeyError"):
        prepro.golden.verify(prepro.load(v1_dir))


def test_inspect_piped_into_a_reader_that_stops_early_exits_quietly(v1_dir):
    """`prepro inspect ... | head -1`: no traceback and no error line when the pipe closes
    (here closed before the first write, so every write fails)."""
    import subprocess
    import sys
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        inspect = subprocess.run([sys.executable, "-m", "pipelines.cli", "inspect", v1_dir], stdout=write_end,
                                 stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert inspect.stderr == b"" and inspect.returncode == 141
