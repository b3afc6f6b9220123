"""Stock Keras 3 layers built from artifacts: `prepro.load(path).layer(name)`.

A layer is built with the spec's constructor options plus its vocabulary. When the
vocabulary file holds every token, the layer reads the file itself (a
`TextFileInitializer`: nothing large embedded in a saved graph, and `.keras` files
carry it as an asset). Otherwise (see `prepro.vocab` on exceptions) the layer gets
the full list.

`output_mode="tf_idf"`: Keras refuses a vocabulary file in that mode, so the layer
gets the vocabulary as a list plus IDF weights computed from the artifact's document
frequencies with Keras's own formula and TensorFlow ops (`idf_weights`). For
vocabularies too large to embed in a saved graph, `tf_idf_parts` gives the same
output as a file-backed `count` layer and a weight vector to multiply by.
"""

import contextlib
import functools
import math
import re
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from prepro import artifacts, fs, spec as spec_lib, state_files, vocab

OOV_TEXT_TOKEN = "[UNK]"  # TextVectorization's OOV token; its only special token in tf_idf mode
_SCAN_BLOCK = 1 << 20  # a vocabulary scan's block: ~10x its size in temporaries, whatever the file's


# TensorFlow shares a vocabulary file's lookup table between all layers a process builds
# from the same path string (TextFileInitializer's shared_name holds the file name), so a
# layer built from a path whose bytes changed since TensorFlow read it would silently get
# the old table. What TensorFlow was given for each path: its SHA-256, or None when a read
# was not confirmed (the file changed during it, or Keras failed).
_GIVEN_TO_TENSORFLOW: Dict[str, Optional[str]] = {}


class Artifacts:
    """Loaded, verified artifacts.

    Example:
    >>> arts = prepro.load("artifacts/")
    >>> layer = arts.layer("review")          # keras.layers.TextVectorization
    >>> layer(["the cat sat"])
    """

    def __init__(self, root: str, manifest: Dict[str, Any], custom_objects: Optional[Mapping[str, Any]] = None,
                 _trusted: bool = False):
        self.root = root
        # Validated here, whoever made the dict: every accessor below relies on its structure.
        # (`_trusted`: only prepro.keras_check, whose manifest holds a config it is about to
        # show Keras refuses, so that Keras's own reason is the one reported.)
        self.manifest = manifest if _trusted else artifacts.validate_manifest(manifest, fs.join(root, artifacts.MANIFEST))
        self.state_root = artifacts.state_root(root, self.manifest)  # where the manifest's files are
        # The only way state files are read: listed, confined, checked when read.
        self.files = artifacts.StateFiles(root, self.manifest)
        self.custom_objects = dict(custom_objects or {})

    def verify(self) -> None:
        """Checks every listed file against its size and SHA-256 again. `layer` checks
        the files it reads; a SavedModel export copies a file-backed vocabulary when it
        runs, so verify right before exporting if the directory may have changed."""
        self.files.verify_all()

    @functools.cached_property
    def spec(self) -> spec_lib.Spec:
        """The spec the artifacts were made from (callables by name)."""
        return spec_lib.spec_from_dict(artifacts.spec_dict(self.manifest))

    @property
    def features(self) -> List[str]:
        return sorted(self.manifest["features"])

    def figures(self, name: str) -> Dict[str, Any]:
        return self._feature(name)["figures"]

    def vocabulary(self, name: str) -> List[Any]:
        """The learned tokens in rank order (str or int), without mask and OOV slots."""
        entry = self._feature(name)
        state = entry["state"]
        integer = entry["layer"] == "IntegerLookup"
        relpath = state["vocabulary_file"]
        data = self.files.read(relpath)
        with self._parsing(relpath):
            tokens = state_files.read_vocabulary(data, integer, state["exceptions"], state["vocabulary_size"])
            return tokens if integer else [t.decode("utf-8") for t in tokens]

    def vocabulary_array(self, name: str):
        """`vocabulary(name)` as one pyarrow array (large_binary UTF-8, or int64): for
        comparing vocabularies of millions of tokens without a Python object each."""
        import pyarrow as pa
        entry = self._feature(name)
        state = entry["state"]
        integer = entry["layer"] == "IntegerLookup"
        relpath = state["vocabulary_file"]
        data = self.files.read(relpath)
        with self._parsing(relpath):
            tokens = vocab.read_vocabulary_array(data, integer)
            # Exception k (ranks ascending) has k exceptions and rank - k file tokens before it.
            pieces, at = [], 0
            for k, (rank, token) in enumerate(sorted((r, vocab.token_from_json(t)) for r, t in state["exceptions"])):
                pieces += [tokens.slice(at, rank - k - at), pa.array([token], tokens.type)]
                at = rank - k
            merged = pa.concat_arrays(pieces + [tokens.slice(at)]) if pieces else tokens
            state_files.require_count(merged, state["vocabulary_size"], "tokens (exceptions included)",
                                      "vocabulary_size")
            return merged

    def vocabulary_positions(self, name: str, values) -> np.ndarray:
        """Each of `values`' (an Arrow array: large_binary UTF-8, or int64) rank in
        `vocabulary(name)`, -1 where it is not there. The file is scanned a block at a
        time: a few lookups in a 20M-token vocabulary hold megabytes, not the GB that
        `vocabulary_array` would."""
        entry = self._feature(name)
        state = entry["state"]
        relpath = state["vocabulary_file"]
        exceptions = sorted((r, vocab.token_from_json(t)) for r, t in state["exceptions"])
        blocks = self.files.blocks(relpath, _SCAN_BLOCK)
        with self._parsing(relpath):
            try:
                lines, count = vocab.find_in_vocabulary_file(blocks, values, entry["layer"] == "IntegerLookup")
            except ValueError:
                for _ in blocks:  # a modified file's checksum error comes before a parse error
                    pass
                raise
            state_files.require_count(range(count + len(exceptions)), state["vocabulary_size"],
                                      "tokens (exceptions included)", "vocabulary_size")
        # Exception k (ranks ascending) has k exceptions and rank - k file tokens before
        # it: file line i is at rank i plus the exceptions whose rank - k is at most i.
        slots = np.array([rank - k for k, (rank, _) in enumerate(exceptions)], np.int64)
        ranks = np.where(lines >= 0, lines + np.searchsorted(slots, lines, side="right"), -1)
        if exceptions:  # (not in the file: matched here, by value)
            rank_of = {token: rank for rank, token in exceptions}
            for i, value in enumerate(values.to_pylist()):
                ranks[i] = rank_of.get(value, ranks[i])
        return ranks

    def token_state(self, name: str):
        """The kept state of a vocabulary feature (`prepro analyze --keep-state`): a
        pyarrow Table of every distinct token seen (bytes, or int64 for IntegerLookup),
        mask and OOV tokens aside, with its `count` and `doc_count` (0 unless the spec
        counts document frequencies), and for a weighted feature its `weight` (a
        decimal sum of its rows' weights), sorted by token."""
        entry = self._feature(name)
        if "token_state_file" not in entry.get("state", {}):
            raise ValueError(f"feature {name!r} has no kept state; re-run the analyze job with --keep-state"
                             if entry["layer"] not in spec_lib.NUMERIC_LAYERS + spec_lib.STATELESS_LAYERS else
                             f"feature {name!r} ({entry['layer']}) keeps no token state")
        relpath = entry["state"]["token_state_file"]
        data = self.files.read(relpath)
        with self._parsing(relpath):
            return state_files.read_token_state(data, entry["layer"] == "IntegerLookup",
                                                entry["state"]["token_state_rows"], "weight" in entry)

    def layer(self, name: str, in_memory: bool = False, **overrides):
        """A new stock `keras.layers` object for feature `name`, ready to call.

        `in_memory`: give a lookup its vocabulary as a list rather than the file (the
        table is then a constant of any saved graph; TFLite, for one, does not
        initialize file-backed tables). `overrides` change options that do not affect the learned state (for example
        `output_mode="multi_hot"` on a lookup whose vocabulary does not depend on it,
        or `name`); prepro refuses ones that would change which tokens were kept.
        """
        entry = self._feature(name)
        config = {**entry["config"], **overrides}
        if entry["layer"] in spec_lib.NUMERIC_LAYERS:
            return self._numeric_layer(name, entry, config, overrides)
        if entry["layer"] in spec_lib.STATELESS_LAYERS:
            config.setdefault("name", default_layer_name(name, entry["layer"]))
            return self._construct(name, entry["layer"], config, overrides)
        _check_overrides(entry, overrides, name)
        for key in ("standardize", "split"):
            if key in config and isinstance(config[key], str) and spec_lib._is_callable_ref(config[key]):
                config[key] = self._resolve(config[key], name)
        if isinstance(config.get("ngrams"), list):  # YAML/JSON lists; Keras wants a tuple
            config["ngrams"] = tuple(config["ngrams"])
        config.setdefault("name", default_layer_name(name, entry["layer"]))
        state = entry["state"]
        if config.get("output_mode") == "tf_idf":
            config["vocabulary"], config["idf_weights"] = self.tf_idf_state(name)
        elif in_memory or state["exceptions"] or not self._tensorflow_may_read(state["vocabulary_file"]):
            config["vocabulary"] = self.vocabulary(name)
        else:
            return self._file_backed(name, entry, config, overrides)
        return self._construct(name, entry["layer"], config, overrides)

    def _tensorflow_may_read(self, relpath: str) -> bool:
        """False if TensorFlow read other bytes (or unconfirmed ones) from this path earlier
        in this process (a job re-run into the same directory): it may reuse that table."""
        return _GIVEN_TO_TENSORFLOW.get(self.files.path(relpath), self._sha256(relpath)) == self._sha256(relpath)

    def _file_backed(self, name: str, entry: Dict[str, Any], config: Dict[str, Any], overrides):
        """A lookup that TensorFlow's TextFileInitializer fills from the vocabulary file
        itself (nothing large embedded in a saved graph). The file is checked just before
        and just after, so the bytes TensorFlow read in between are the listed ones."""
        relpath = entry["state"]["vocabulary_file"]
        if fs.is_remote(self.root):  # a checked local copy (StateFiles.local_path), checked again after
            path = self.files.local_path(relpath)
            layer = self._construct(name, entry["layer"], {**config, "vocabulary": path}, overrides)
            self.files.local_path(relpath)
            return layer
        path = self.files.path(relpath)
        self.files.verify(relpath)
        _GIVEN_TO_TENSORFLOW[path] = None  # unconfirmed until checked after the read
        layer = self._construct(name, entry["layer"], {**config, "vocabulary": path}, overrides)
        self.files.verify(relpath)
        _GIVEN_TO_TENSORFLOW[path] = self._sha256(relpath)
        return layer

    def _sha256(self, relpath: str) -> str:
        return self.manifest["files"][relpath]["sha256"]

    def _numeric_layer(self, name: str, entry: Dict[str, Any], config: Dict[str, Any], overrides):
        config.setdefault("name", default_layer_name(name, entry["layer"]))
        state = entry["state"]
        if entry["layer"] == "Normalization":
            if isinstance(config.get("axis"), list):
                config["axis"] = tuple(config["axis"])
            config["mean"], config["variance"] = self.moments(name)
            # Built now, eagerly, for the input shape the artifact was computed on: a
            # layer first built inside a tf.function (tf.data, XLA, a distribution
            # strategy) would keep tensors of that function's graph.
            return self._construct(name, "Normalization", config, overrides,
                                   build=(None, *self.spec.features[name].element_shape))
        if "boundaries_file" in state:
            config.pop("num_bins", None)  # Keras takes one of num_bins and bin_boundaries
            config["bin_boundaries"] = self.bin_boundaries(name)
        return self._construct(name, "Discretization", config, overrides)

    def _construct(self, name: str, layer: str, config: Dict[str, Any], overrides: Mapping[str, Any], build=None):
        """The stock Keras layer. A failure with the artifact's own options is the
        artifact's (an ArtifactError naming it); with `overrides`, it may be the caller's,
        so Keras's exception is raised as it is."""
        cls = keras_class(layer)
        try:
            built = cls(**config)
            if build is not None:
                built.build(build)
            return built
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            _raise_if_backend_refuses(name, layer, first, e)
            if overrides:
                raise
            raise artifacts.ArtifactError(artifacts.one_line(
                f"{self.root}: feature {name!r}: Keras cannot build {layer} from the artifact: "
                f"{type(e).__name__}: {first}", 600)) from e

    @staticmethod
    @contextlib.contextmanager
    def _parsing(relpath: str):
        """Bytes that passed their checksum can still be malformed (a hand-made artifact):
        a parse error is the artifact's, naming the file."""
        try:
            yield
        except (ValueError, OverflowError) as e:
            raise artifacts.ArtifactError(artifacts.one_line(f"{relpath}: malformed: {e}", 600)) from None

    def preprocessing(self, features=None, raw_dtypes=None, in_memory: bool = False, raw_shapes=None):
        """The host half (tf.data), the device half (in the model) and the end-to-end
        serving model of `features` (default: all but inverse lookups, which map
        model outputs back to tokens); see `prepro.training`.
        `in_memory`: lookups hold their vocabularies as lists (see `layer`).
        `raw_shapes`: one row's shape of fixed-length list columns, e.g. {"tags": (3,)}."""
        from prepro.training import Preprocessing
        inverse = [n for n in self.features if self.spec.features[n].is_inverse_lookup]
        if features is None:
            features = [n for n in self.features if n not in inverse]
        named = sorted(set(features) & set(inverse))
        if named:
            raise ValueError(f"features {named} are inverse lookups (invert=True): they map model outputs "
                             f"(indices) back to tokens, so they are not preprocessing; build them with "
                             f"arts.layer(name) and apply them to the model's output")
        return Preprocessing(self, features, raw_dtypes, in_memory, raw_shapes)

    def moments(self, name: str):
        """(mean, variance) of a Normalization feature: float64 arrays of the kept axes' shape."""
        state = self._feature(name)["state"]
        shape = tuple(state["shape"])
        out = []
        for key in ("mean_file", "variance_file"):
            data = self.files.read(state[key])
            with self._parsing(state[key]):
                values = state_files.read_floats(data, math.prod(shape), f"state shape {list(shape)}")
                if not np.isfinite(values).all() or (key == "variance_file" and (values < 0).any()):
                    raise ValueError("a mean or variance that is not finite, or a negative variance")
                out.append(values.reshape(shape))
        return tuple(out)

    def bin_boundaries(self, name: str) -> List[float]:
        """A Discretization feature's learned boundaries (float32-exact floats)."""
        state = self._feature(name)["state"]
        data = self.files.read(state["boundaries_file"])
        with self._parsing(state["boundaries_file"]):
            return state_files.read_boundaries(data, state["num_boundaries"])

    def tf_idf_state(self, name: str):
        """(vocabulary, idf_weights) for a tf_idf layer's constructor or `set_vocabulary`.

        Both start with the OOV slots. Passing the special tokens and their weight
        ourselves keeps Keras from padding with `np.average`, which can differ in the
        last bit from the `tf.reduce_mean` that adapt() uses.
        """
        weights, tokens = self.idf_weights(name), self.vocabulary(name)
        specials = self._tf_idf_specials(name)
        if specials is None:  # Keras pads itself (np.average); see _tf_idf_specials
            return tokens, weights
        return specials + tokens, np.concatenate([[_oov_weight(weights)] * len(specials), weights]).astype(np.float32)

    def _tf_idf_specials(self, name: str) -> Optional[List[Any]]:
        """The tokens before the learned ones in tf_idf mode: the OOV token once per
        OOV index (no mask slot outside "int" mode). None when there are OOV indices but
        no OOV token to write for them (`oov_token: null`), so nothing can be passed."""
        entry = self._feature(name)
        if entry["layer"] == "TextVectorization":
            return [OOV_TEXT_TOKEN]
        options = spec_lib.FeatureSpec(name, entry["source"], entry["layer"], entry["config"]).options
        slots = options["num_oov_indices"]
        if slots and options["oov_token"] is None:
            return None
        return [options["oov_token"]] * slots

    def document_frequencies(self, name: str) -> np.ndarray:
        """How many documents (rows) each learned token occurs in, in rank order."""
        state = self._feature(name)["state"]
        if "document_frequencies_file" not in state:
            raise ValueError(f"feature {name!r} was analyzed without document frequencies; put "
                             f"output_mode: tf_idf in its spec and re-run the analyze job")
        data = self.files.read(state["document_frequencies_file"])
        with self._parsing(state["document_frequencies_file"]):
            return state_files.read_document_frequencies(data, state["vocabulary_size"])

    def report(self, out: Optional[str] = None, base=None):
        """The visual report (`prepro report`): a `prepro.report.Report` whose `html` is one
        self-contained page, saved to `out` when given, displayed inline in a notebook;
        `base` (an older artifact) adds the drift view."""
        from prepro.report import report
        return report(self, out, base)

    def token_counts(self, name: str) -> np.ndarray:
        """Each learned token's count (occurrences), in rank order (format version 4)."""
        profile, distribution = self._profile(name), self.count_distribution(name)
        data = self.files.read(profile["counts_file"])
        with self._parsing(profile["counts_file"]):
            return state_files.read_counts(data, self._feature(name)["state"]["vocabulary_size"],
                                           (distribution.counts, distribution.tokens))

    def count_distribution(self, name: str):
        """Every distinct token's count, as a `prepro.profile.TokenDistribution` (how many
        tokens occur c times, for every c): the whole rank-frequency curve."""
        from prepro.profile import TokenDistribution
        profile, g = self._profile(name), self._feature(name)["figures"]
        data = self.files.read(profile["count_distribution_file"])
        with self._parsing(profile["count_distribution_file"]):
            return TokenDistribution(*state_files.read_count_distribution(
                data, profile["count_distribution_rows"], g["distinct_tokens"],
                g["tokens_seen"] - g["special_tokens_seen"]))

    def quantile_profile(self, name: str):
        """A learned Discretization's values at every 1/steps of the weight, as a
        `prepro.profile.QuantileProfile`."""
        from prepro.profile import QuantileProfile
        profile = self._profile(name)
        data = self.files.read(profile["quantiles_file"])
        with self._parsing(profile["quantiles_file"]):
            return QuantileProfile(state_files.read_quantile_profile(data, profile["quantile_steps"]))

    def _profile(self, name: str) -> Dict[str, Any]:
        entry = self._feature(name)
        if "profile" not in entry:
            raise ValueError(f"feature {name!r} has no profile: "
                             + ("its artifact predates format version 4; re-run the analyze job"
                                if self.manifest["format_version"] < 4 else
                                f"{entry['layer']} records none" + (" (its boundaries come from the config)"
                                                                     if entry["layer"] == "Discretization" else "")))
        return entry["profile"]

    def idf_weights(self, name: str) -> np.ndarray:
        """Keras's IDF weight of each learned token, `log(1 + N / (1 + df))`, as float32.

        Computed with the TensorFlow ops and dtypes `adapt()` uses (int64 counts, true
        division in float64, then a cast), so the weights are the same bits.
        """
        import tensorflow as tf
        documents = tf.constant(self._feature(name)["state"]["documents"], tf.int64)
        frequencies = tf.constant(self.document_frequencies(name), tf.int64)
        return tf.cast(tf.math.log(1 + documents / (1 + frequencies)), "float32").numpy()

    def tf_idf_parts(self, name: str, **overrides):
        """(count layer, weights): a file-backed `output_mode="count"` layer and the
        float32 weight of every output index, such that
        `keras.ops.multiply(counts_layer(x), weights)` equals the tf_idf layer's output.

        For vocabularies too large to embed in a saved graph: the tokens stay in the
        vocabulary file (an asset), only the weights (4 bytes per token) become a constant.
        """
        entry = self._feature(name)
        if entry["config"].get("output_mode") != "tf_idf":
            raise ValueError(f"feature {name!r} is not a tf_idf feature")
        counts = self.layer(name, output_mode="count", **overrides)
        _, weights = self.tf_idf_state(name)
        if self._tf_idf_specials(name) is None:  # the front padding Keras's set_vocabulary adds
            slots = spec_lib.token_start(self.spec.features[name])
            weights = np.pad(weights, (slots, 0), constant_values=np.average(weights))
        if entry["config"].get("pad_to_max_tokens") and entry["config"].get("max_tokens"):
            weights = np.pad(weights, (0, entry["config"]["max_tokens"] - len(weights)))
        return counts, weights

    def _feature(self, name: str) -> Dict[str, Any]:
        try:
            return self.manifest["features"][name]
        except KeyError:
            raise KeyError(f"no feature {name!r} in {self.root}; features: {self.features}") from None

    def _resolve(self, ref: str, feature: str):
        if ref in self.custom_objects:
            return self.custom_objects[ref]
        short = ref.rsplit(":", 1)[-1]
        if short in self.custom_objects:
            return self.custom_objects[short]
        import keras
        registered = keras.saving.get_registered_object(short) or keras.saving.get_registered_object(ref)
        if registered is not None:
            return registered
        raise ValueError(f"feature {feature!r} was analyzed with the callable {ref!r}; artifacts never "
                         f"import code, so pass it: prepro.load(path, custom_objects={{{ref!r}: fn}})")


def keras_class(layer: str):
    """The stock Keras class for a layer name the artifact gives: only the layers prepro
    builds (the keys of `spec.LAYER_DEFAULTS`), never any other name in keras.layers."""
    if layer not in spec_lib.LAYER_DEFAULTS:
        raise artifacts.ArtifactError(artifacts.one_line(f"layer {layer!r} is not one prepro builds "
                                                          f"({', '.join(sorted(spec_lib.LAYER_DEFAULTS))})"))
    import keras
    return getattr(keras.layers, layer)


def _raise_if_backend_refuses(feature: str, layer: str, keras_says: str, error: Exception) -> None:
    """Keras builds some layers only on the TensorFlow backend (sparse=True lookups and
    text, ragged=True text): not the artifact's fault, so a BackendError saying so."""
    import keras
    backend = keras.backend.backend()
    if backend != "tensorflow" and "backend" in keras_says:
        from prepro.training import BackendError
        raise BackendError(f"feature {feature!r}: Keras builds this {layer} only on the TensorFlow backend, not "
                           f"{backend} (Keras: {keras_says}); build it with KERAS_BACKEND=tensorflow or "
                           f"change the option in the spec") from error


def default_layer_name(feature: str, layer: str) -> str:
    """`<feature>_<layer in snake case>`, e.g. "age_normalization": unlike the bare
    feature name, it never collides with a `keras.Input` named after the column."""
    return f"{feature}_{re.sub(r'(?<!^)(?=[A-Z])', '_', layer).lower()}"


def _oov_weight(weights: np.ndarray) -> np.float32:
    """The OOV slot's weight as adapt() sets it: the float32 mean of the learned weights."""
    import tensorflow as tf
    return tf.reduce_mean(tf.constant(weights, tf.float32)).numpy()


# Options that change the learned vocabulary or its index layout can't be overridden.
_STATE_SHAPING = ("max_tokens", "num_oov_indices", "mask_token", "oov_token", "standardize",
                  "split", "ngrams", "vocabulary", "idf_weights")


def _check_overrides(entry: Mapping[str, Any], overrides: Mapping[str, Any], name: str) -> None:
    for key, value in overrides.items():
        if key in _STATE_SHAPING and entry["config"].get(key, spec_lib.LAYER_DEFAULTS[entry["layer"]].get(key)) != value:
            raise ValueError(f"feature {name!r}: '{key}' shapes the learned vocabulary; change it in the "
                             f"spec and re-run the analyze job")
    if "output_mode" in overrides:
        before = spec_lib.FeatureSpec(name, entry["source"], entry["layer"], entry["config"])
        after = spec_lib.FeatureSpec(name, entry["source"], entry["layer"], {**entry["config"], **overrides})
        if spec_lib.token_start(before) != spec_lib.token_start(after):
            raise ValueError(f"feature {name!r}: output_mode {overrides['output_mode']!r} changes the "
                             f"index layout, so it would keep a different number of tokens; re-run "
                             f"the analyze job with it in the spec")


def load(path: str, verify: bool = True, custom_objects: Optional[Mapping[str, Any]] = None) -> Artifacts:
    """Opens an artifact directory (local or gs://): reads its manifest (a regular file
    inside the directory, at most 256 MB), validates it (`artifacts.validate_manifest`)
    and, with `verify`, checks every file it lists against its size and SHA-256.
    Whatever `verify` says, every state file is checked again when a layer or accessor
    reads it; any problem is an ArtifactError."""
    return Artifacts(path, artifacts.read_manifest(path, verify=verify), custom_objects)
