"""The feature spec: which column feeds which stock Keras layer, with which options.

A spec is YAML (or the equivalent dict). Each feature names its source column, a Keras
layer class and that layer's own constructor options, so a Keras user already knows
every option:

```yaml
features:
  review:  {source: text,    layer: TextVectorization, config: {max_tokens: 20000}}
  carrier: {source: carrier, layer: StringLookup,      config: {num_oov_indices: 1}}
  flight:  {source: flight,  layer: IntegerLookup,     config: {max_tokens: 5000}}
  fare:    {source: fare,    layer: Discretization,    config: {num_bins: 10}}
  user:    {source: user_id, layer: Hashing,           config: {num_bins: 1024}}
```

Options a layer would receive from `adapt()` (`vocabulary`, `idf_weights`) are not
allowed: producing them is prepro's job. `standardize` and `split` may name a callable
as `"package.module:function"`; the analyze job imports it, `prepro.load` never does
(pass it through `custom_objects`, as with Keras).
"""

import dataclasses
import importlib
import re
import reprlib
from typing import Any, Callable, Dict, Mapping, Optional

REQUIRED = "<required>"  # an option Keras requires (no default)

# The constructor options of each supported Keras 3.15 layer and their defaults.
# tests/test_spec.py checks this table against the installed Keras signatures.
LAYER_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "TextVectorization": {
        "max_tokens": None, "standardize": "lower_and_strip_punctuation",
        "split": "whitespace", "ngrams": None, "output_mode": "int",
        "output_sequence_length": None, "pad_to_max_tokens": False,
        "sparse": False, "ragged": False, "encoding": "utf-8", "name": None,
    },
    "StringLookup": {
        "max_tokens": None, "num_oov_indices": 1, "mask_token": None,
        "oov_token": "[UNK]", "invert": False, "output_mode": "int",
        "pad_to_max_tokens": False, "sparse": False, "encoding": "utf-8",
        "name": None, "salt": None,
    },
    "IntegerLookup": {
        "max_tokens": None, "num_oov_indices": 1, "mask_token": None,
        "oov_token": -1, "vocabulary_dtype": "int64", "invert": False,
        "output_mode": "int", "sparse": False, "pad_to_max_tokens": False,
        "oov_method": "floormod", "salt": None, "name": None,
    },
    "Normalization": {"axis": -1, "invert": False},
    "Hashing": {"num_bins": REQUIRED, "mask_value": None, "salt": None, "output_mode": "int",
                "sparse": False},
    "CategoryEncoding": {"num_tokens": None, "output_mode": "multi_hot", "sparse": False},
    "Discretization": {
        "bin_boundaries": None, "num_bins": None, "epsilon": 0.01, "output_mode": "int",
        "sparse": False, "dtype": None, "name": None,
    },
}
# Options every Keras layer takes through **kwargs (base Layer arguments).
BASE_LAYER_OPTIONS = ("name", "dtype")
NUMERIC_LAYERS = ("Normalization", "Discretization")
# Layers with nothing to learn: the job checks and counts their input, and the
# artifact records them so a whole model is built from one place.
STATELESS_LAYERS = ("Hashing", "CategoryEncoding")
# Set by the analysis, never by the user.
STATE_OPTIONS = ("vocabulary", "idf_weights", "mean", "variance")
QUANTILE_METHODS = ("sketch", "exact")
DEFAULT_RANK_ERROR = 0.001

LOOKUP_MODES = ("int", "one_hot", "multi_hot", "count", "tf_idf")
TEXT_MODES = LOOKUP_MODES
STANDARDIZE_OPTIONS = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
SPLIT_OPTIONS = (None, "whitespace", "character")
INVALID_UTF8_POLICIES = ("error", "replace", "skip")
THRESHOLDS = ("min_count", "min_document_frequency")
# What an update (`--base`) does with the indices of the base's tokens: "rank" ranks
# everything again (adapt()'s order over all the data), "stable" keeps every base
# token's index and appends new tokens in adapt()'s order among themselves.
INDEX_POLICIES = ("rank", "stable")


class SpecError(ValueError):
    """A spec that prepro cannot honour; the message names the feature."""

    # Beam re-raises a step's exception as it is when it carries this flag, instead of a
    # copy with " [while running '<step>']" appended (see pipelines.errors.InputError).
    _tagged_with_step = True


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature: `source` column -> Keras `layer` built with `config`.

    `config` holds the user's options only; `options` fills in Keras's defaults.
    `invalid_utf8` says what to do with a string value that is not UTF-8:
    "error" (default), "replace" (decode with U+FFFD) or "skip" (drop the value);
    replaced and skipped values are counted in the manifest.

    `min_count` and `min_document_frequency` are thresholds `adapt()` lacks (TensorFlow
    Transform's `frequency_threshold` and document-frequency filters): a token is kept
    only if it occurs at least `min_count` times and in at least
    `min_document_frequency` documents (rows), before the `max_tokens` cut. The
    defaults, 1 and 1, keep exactly what `adapt()` keeps.
    """

    name: str
    source: Any             # a column name; for numeric layers also a list of columns
    layer: str
    config: Mapping[str, Any]
    invalid_utf8: str = "error"
    min_count: int = 1
    min_document_frequency: int = 1
    shape: Optional[tuple] = None       # numeric list column: each row's fixed shape
    weight: Optional[str] = None        # Discretization, vocabulary layers: a row-weight column
    quantiles: str = "sketch"           # Discretization: "sketch" or "exact"
    rank_error: float = DEFAULT_RANK_ERROR  # Discretization sketch: max rank error / total weight
    index_policy: str = "rank"          # vocabulary layers, in an update: see INDEX_POLICIES

    @property
    def options(self) -> Dict[str, Any]:
        return {**LAYER_DEFAULTS[self.layer], **self.config}

    @property
    def is_text(self) -> bool:
        return self.layer == "TextVectorization"

    @property
    def is_integer(self) -> bool:
        return self.layer == "IntegerLookup"

    @property
    def is_numeric(self) -> bool:
        return self.layer in NUMERIC_LAYERS

    @property
    def is_inverse_lookup(self) -> bool:
        """A StringLookup/IntegerLookup with invert=True: it maps indices (model outputs)
        back to tokens, from the vocabulary the forward "int" layer would learn."""
        return self.layer in ("StringLookup", "IntegerLookup") and self.options["invert"] is True

    @property
    def is_stateless(self) -> bool:
        return self.layer in STATELESS_LAYERS

    @property
    def value_kind(self) -> str:
        """What the source column holds: "string", "int", "float", or "hashable"
        (strings or integers, as Keras's Hashing takes either)."""
        if self.is_numeric:
            return "float"
        if self.layer in ("IntegerLookup", "CategoryEncoding"):
            return "int"
        return "hashable" if self.layer == "Hashing" else "string"

    @property
    def sources(self) -> tuple:
        return tuple(self.source) if isinstance(self.source, (list, tuple)) else (self.source,)

    @property
    def element_shape(self) -> tuple:
        """Shape of one row's value: (1,) for a scalar column, (k,) for k stacked columns,
        the declared `shape` for a list column."""
        if self.shape is not None:
            return tuple(self.shape)
        return (len(self.sources),)

    def to_dict(self) -> Dict[str, Any]:
        out = {"source": self.source, "layer": self.layer, "config": _plain(dict(self.config))}
        if self.invalid_utf8 != "error":
            out["invalid_utf8"] = self.invalid_utf8
        for key in THRESHOLDS:
            if getattr(self, key) != 1:
                out[key] = getattr(self, key)
        if self.index_policy != "rank":
            out["index_policy"] = self.index_policy
        if isinstance(self.source, (list, tuple)):
            out["source"] = list(self.source)
        for key, default in (("shape", None), ("weight", None), ("quantiles", "sketch"),
                             ("rank_error", DEFAULT_RANK_ERROR)):
            if getattr(self, key) != default and (self.is_numeric or key == "weight"):
                out[key] = list(getattr(self, key)) if key == "shape" else getattr(self, key)
        return out


@dataclasses.dataclass(frozen=True)
class Spec:
    features: Mapping[str, FeatureSpec]

    @property
    def sources(self):
        """Every source column, sorted."""
        return sorted({column for f in self.features.values() for column in f.sources})

    def to_dict(self) -> Dict[str, Any]:
        return {"features": {n: f.to_dict() for n, f in sorted(self.features.items())}}


def load_spec(path: str) -> Spec:
    """Reads a YAML spec (UTF-8) from a local path or any path Beam's file systems read."""
    import yaml
    from prepro import fs
    data = fs.read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SpecError(f"{path}: not a spec: collections nested too deeply") from None
    return spec_from_dict(raw, where=path)


def spec_from_dict(raw: Any, where: str = "spec") -> Spec:
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict) or not raw["features"]:
        raise SpecError(f"{where}: expected a mapping with a non-empty 'features' mapping")
    unknown = set(raw) - {"features"}
    if unknown:
        raise SpecError(f"{where}: unknown top-level keys {_listed(unknown)}")
    check_feature_names(raw["features"], where)
    return Spec({name: _feature_from_dict(name, entry, where) for name, entry in raw["features"].items()})


# A feature's name becomes a directory and file names under the artifact root and a key
# of manifest.json, so it is one portable path component: no separators, no "." or "..",
# nothing a shell or an object store treats specially. "golden" is the golden-rows
# directory. Names equal but for case would share a directory on a case-insensitive
# file system (macOS, Windows, some FUSE mounts).
FEATURE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
FEATURE_NAME_RULE = ("1 to 100 characters from A-Z, a-z, 0-9, '_', '.' and '-', starting with a "
                     "letter or digit; not 'golden' in any case; no two equal ignoring case")
RESERVED_FEATURE_NAMES = ("golden",)


def check_feature_names(names: Any, where: str = "spec") -> None:
    """Raises SpecError naming the first feature name that breaks FEATURE_NAME_RULE."""
    by_folded: Dict[str, str] = {}
    for name in names:
        if not isinstance(name, str):
            raise SpecError(f"{where}: feature name {_shown(name)} is a {type(name).__name__}, not a string "
                            f"(in YAML, quote it); a feature name is {FEATURE_NAME_RULE}")
        if not FEATURE_NAME_PATTERN.fullmatch(name):
            raise SpecError(f"{where}: feature name {_shown(name)} is not allowed: a feature name is "
                            f"{FEATURE_NAME_RULE}")
        folded = name.lower()
        if folded in RESERVED_FEATURE_NAMES:
            raise SpecError(f"{where}: feature name {_shown(name)} is reserved (the artifact's "
                            f"{folded}-rows directory); a feature name is {FEATURE_NAME_RULE}")
        if folded in by_folded:
            raise SpecError(f"{where}: feature names {_shown(by_folded[folded])} and {_shown(name)} differ only in "
                            f"case, so a case-insensitive file system would merge their directories; "
                            f"a feature name is {FEATURE_NAME_RULE}")
        by_folded[folded] = name


def _listed(keys) -> str:
    """Keys of any type (YAML keys may be numbers, booleans or null) in a stable order."""
    return "[" + ", ".join(sorted(map(_shown, keys))) + "]"


def _shown_repr() -> reprlib.Repr:
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = 120
    shown.maxlist = shown.maxdict = shown.maxtuple = shown.maxset = 8
    shown.maxlevel = 3
    return shown


_SHOWN = _shown_repr()


def _shown(value: Any) -> str:
    """A user's value in a one-line message: its repr, shortened if long or deeply nested."""
    return _SHOWN.repr(value)


def _feature_from_dict(name: str, entry: Any, where: str) -> FeatureSpec:
    ctx = f"{where}: feature '{name}'"
    if not isinstance(entry, dict):
        raise SpecError(f"{ctx}: expected a mapping with source, layer and config")
    unknown = set(entry) - {"source", "layer", "config", "invalid_utf8", "index_policy", *THRESHOLDS, *NUMERIC_KEYS}
    if unknown:
        raise SpecError(f"{ctx}: unknown keys {_listed(unknown)}")
    layer = entry.get("layer")
    if not isinstance(layer, str) or layer not in LAYER_DEFAULTS:
        raise SpecError(f"{ctx}: layer must be one of {sorted(LAYER_DEFAULTS)}, got {_shown(layer)}")
    source = entry.get("source", name)
    if layer in NUMERIC_LAYERS and isinstance(source, list) and source and all(map(_is_column, source)):
        source = tuple(source)
    elif not _is_column(source):
        raise SpecError(f"{ctx}: source must be a column name (a non-empty string)"
                        + (" or a list of them" if layer in NUMERIC_LAYERS else "") + f", got {_shown(source)}")
    numeric_keys = sorted(set(entry) & set(NUMERIC_KEYS) - ({"weight"} if layer in VOCABULARY_LAYERS else set()))
    if layer not in NUMERIC_LAYERS and numeric_keys:
        if numeric_keys == ["weight"]:
            raise SpecError(f"{ctx}: weight applies to {', '.join(VOCABULARY_LAYERS)} and Discretization only")
        raise SpecError(f"{ctx}: {numeric_keys} apply to {' and '.join(NUMERIC_LAYERS)} only")
    config = entry.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise SpecError(f"{ctx}: config must be a mapping of {layer} options, got {_shown(config)}")
    config = dict(config)
    invalid_utf8 = entry.get("invalid_utf8", "error")
    if invalid_utf8 not in INVALID_UTF8_POLICIES:
        raise SpecError(f"{ctx}: invalid_utf8 must be one of {INVALID_UTF8_POLICIES}")
    if (layer in NUMERIC_LAYERS or layer in STATELESS_LAYERS) and set(entry) & set(THRESHOLDS):
        raise SpecError(f"{ctx}: {sorted(set(entry) & set(THRESHOLDS))} apply to vocabulary layers only")
    thresholds = {key: entry.get(key, 1) for key in THRESHOLDS}
    for key, value in thresholds.items():
        if not _is_positive_int(value):
            raise SpecError(f"{ctx}: {key} must be a positive integer, got {_shown(value)}")
    index_policy = entry.get("index_policy", "rank")
    if "index_policy" in entry and (layer in NUMERIC_LAYERS or layer in STATELESS_LAYERS):
        raise SpecError(f"{ctx}: index_policy applies to vocabulary layers only")
    if index_policy not in INDEX_POLICIES:
        raise SpecError(f"{ctx}: index_policy must be one of {INDEX_POLICIES}, got {_shown(index_policy)}")
    feature = FeatureSpec(name, source, layer, config, invalid_utf8, **thresholds,
                          **_numeric_keys(entry, layer, source, config, ctx), index_policy=index_policy)
    validate_options(feature, ctx)
    return feature


NUMERIC_KEYS = ("shape", "weight", "quantiles", "rank_error")
# `weight` also weights a vocabulary layer's token counts (TFT's weighted vocabularies).
VOCABULARY_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup")
DISCRETIZATION_KEYS = ("weight", "quantiles", "rank_error")


def _is_column(value: Any) -> bool:
    """Column names are data (any non-empty string), unlike feature names."""
    return isinstance(value, str) and value != ""


def _numeric_keys(entry: Dict[str, Any], layer: str, source: Any, config: Dict[str, Any],
                  ctx: str) -> Dict[str, Any]:
    out = {}
    discretization_keys = sorted(set(entry) & set(DISCRETIZATION_KEYS)
                                 - ({"weight"} if layer in VOCABULARY_LAYERS else set()))
    if layer != "Discretization" and discretization_keys:
        raise SpecError(f"{ctx}: {discretization_keys} apply to Discretization only")
    shape = entry.get("shape")
    if shape is not None:
        if not (isinstance(shape, list) and shape and all(map(_is_positive_int, shape))):
            raise SpecError(f"{ctx}: shape must be a list of positive integers, got {_shown(shape)}")
        if isinstance(source, tuple):
            raise SpecError(f"{ctx}: shape applies to one list column, not to stacked columns")
        out["shape"] = tuple(shape)
    if entry.get("weight") is not None:
        if not _is_column(entry["weight"]):
            raise SpecError(f"{ctx}: weight must be a column name (a non-empty string), got {_shown(entry['weight'])}")
        out["weight"] = entry["weight"]
    if "quantiles" in entry:
        if entry["quantiles"] not in QUANTILE_METHODS:
            raise SpecError(f"{ctx}: quantiles must be one of {QUANTILE_METHODS}")
        out["quantiles"] = entry["quantiles"]
    if "rank_error" in entry:
        r = entry["rank_error"]
        if not _is_number(r) or not 0 < r < 1:
            raise SpecError(f"{ctx}: rank_error must be a number in (0, 1), got {_shown(r)}")
        out["rank_error"] = float(r)
    epsilon = config.get("epsilon") if layer == "Discretization" else None
    if epsilon is not None:
        if not _is_number(epsilon) or not 0 < epsilon < 1:
            raise SpecError(f"{ctx}: epsilon must be a number in (0, 1), got {_shown(epsilon)}")
        # Keras's epsilon is adapt()'s error tolerance; a tighter one tightens the sketch,
        # a looser one never loosens prepro's default.
        out.setdefault("rank_error", min(float(epsilon), DEFAULT_RANK_ERROR))
    return out


# Rules Keras also enforces quote Keras 3.15's own reason ("Keras: ..."), so the message
# says what Keras would say; tests/test_spec_keras.py checks every quote against what
# Keras raises and that every other refusal is one Keras does not make (prepro's own).
# `prepro.keras_check` builds and calls the layers for the rest (dtype names, call-time
# errors), which needs Keras.
TF_SCOPE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\>-]*")  # TensorFlow's root scope names, without '/'
BOOLEAN_OPTIONS = ("sparse", "ragged", "pad_to_max_tokens", "invert")
INT64 = (-(1 << 63), (1 << 63) - 1)
# output_mode values each Keras layer knows, and its words for one it does not.
KERAS_MODES = {"TextVectorization": TEXT_MODES, "StringLookup": LOOKUP_MODES, "IntegerLookup": LOOKUP_MODES,
               "Hashing": ("int", "one_hot", "multi_hot", "count"),
               "CategoryEncoding": ("one_hot", "multi_hot", "count"),
               "Discretization": ("int", "one_hot", "multi_hot", "count")}
KERAS_UNKNOWN_MODE = {"Hashing": "Invalid value for argument `output_mode`",
                      "CategoryEncoding": "Unknown arg for output_mode"}
KERAS_MODE_ALIASES = {"binary": "multi_hot", "tf-idf": "tf_idf"}


def validate_options(feature: FeatureSpec, ctx: str) -> None:
    """Rejects, without importing Keras, what Keras would refuse (with Keras's reason)
    and what prepro does not support, before a long job starts."""
    allowed = LAYER_DEFAULTS[feature.layer]
    for key in feature.config:
        if key in STATE_OPTIONS:
            raise SpecError(f"{ctx}: '{key}' is computed by prepro; remove it from config")
        if key not in allowed and key not in BASE_LAYER_OPTIONS:
            raise SpecError(f"{ctx}: {feature.layer} has no option {_shown(key)} "
                            f"(options: {', '.join(sorted(allowed))})")
    o = feature.options
    for key, value in o.items():
        if value is REQUIRED:
            raise SpecError(f"{ctx}: {feature.layer} needs '{key}' in config")
    _validate_common(feature, o, ctx)
    if feature.is_numeric:
        return _validate_numeric(feature, o, ctx)
    if feature.is_stateless:
        return _validate_stateless(feature, o, ctx)
    if feature.is_text:
        _validate_text(o, ctx)
    else:
        _validate_lookup(feature, o, ctx)
    _validate_max_tokens(feature, o, ctx)


def _validate_common(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    """Options several layers share: name, dtype, the booleans, encoding, output_mode, sparse."""
    name = o.get("name")
    if name is not None and (not isinstance(name, str) or "/" in name):
        raise SpecError(f"{ctx}: name must be a string without '/', got {_shown(name)} (Keras: Argument "
                        f"`name` must be a string and cannot contain character `/`)")
    if name is not None and not TF_SCOPE_NAME.fullmatch(name):
        # Keras builds the layer, but calling it in a traced function (tf.data) opens a
        # TensorFlow name scope of that name.
        raise SpecError(f"{ctx}: name {_shown(name)} cannot name a layer that runs in tf.data (TensorFlow, when "
                        f"the layer is called: {_shown(name)} is not a valid root scope name)")
    dtype = o.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise SpecError(f"{ctx}: dtype must be a dtype name such as 'float32', got {_shown(dtype)} (Keras: "
                        f"Cannot interpret `dtype` argument. Expected a string or an instance of DTypePolicy)")
    for key in BOOLEAN_OPTIONS:
        # Keras takes any truthy value, so a quoted 'false' would turn the option on.
        if key in o and not isinstance(o[key], bool):
            raise SpecError(f"{ctx}: {key} must be true or false, got {_shown(o[key])}")
    if o.get("invert") and o.get("output_mode", "int") != "int":
        raise SpecError(f"{ctx}: invert=True needs output_mode 'int' (Keras: `output_mode` must be `'int'` "
                        f"when `invert` is true)")
    # Keras uses `encoding` only to decode the vocabulary it hands back (get_vocabulary,
    # inverse lookups under torch); lookups compare bytes. prepro reads inputs as UTF-8
    # whatever it says (invalid_utf8 decides the rest), so any codec Python knows will do.
    encoding = o.get("encoding", "utf-8")
    if not (isinstance(encoding, str) and _codec_name(encoding)):
        raise SpecError(f"{ctx}: encoding must name a text encoding Python knows, such as 'utf-8', "
                        f"got {_shown(encoding)}")
    mode = o.get("output_mode")
    if isinstance(mode, str) and mode in KERAS_MODE_ALIASES:
        raise SpecError(f"{ctx}: write output_mode '{KERAS_MODE_ALIASES[mode]}' "
                        f"('{mode}' is Keras's older name for it)")
    if "output_mode" in o:
        _check_mode(feature, ctx)
    if o.get("sparse") and mode == "int":
        raise SpecError(f"{ctx}: sparse=True needs an output_mode other than 'int' (Keras: `sparse` "
                        f"may only be true if `output_mode` is one of the others)")


def _check_mode(feature: FeatureSpec, ctx: str) -> None:
    mode = feature.options["output_mode"]
    supported = KERAS_MODES.get(feature.layer, LOOKUP_MODES)
    if isinstance(mode, str) and mode in supported:
        return
    keras_words = KERAS_UNKNOWN_MODE.get(feature.layer, "Unknown value for `output_mode`")
    raise SpecError(f"{ctx}: output_mode must be one of {supported}, got {_shown(mode)} (Keras: {keras_words})")


def _validate_max_tokens(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    max_tokens = o["max_tokens"]
    if max_tokens is None:
        if o["pad_to_max_tokens"]:
            raise SpecError(f"{ctx}: pad_to_max_tokens needs max_tokens "
                            f"(Keras: If pad_to_max_tokens is True, must set `max_tokens`)")
        return
    if not _is_int(max_tokens):
        raise SpecError(f"{ctx}: max_tokens must be an integer or null, got {_shown(max_tokens)}")
    if max_tokens <= 1:
        raise SpecError(f"{ctx}: max_tokens must be greater than 1, got {max_tokens} "
                        f"(Keras: `max_tokens` must be greater than 1)")
    if max_tokens <= token_start(feature):
        raise SpecError(f"{ctx}: max_tokens={max_tokens} leaves no room for tokens "
                        f"after {token_start(feature)} reserved indices")


def _validate_numeric(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    rank = 1 + len(feature.element_shape)  # (batch, *element_shape)
    if feature.layer == "Normalization":
        axis = o["axis"]
        axes = _as_axes(axis)
        if not all(map(_is_int, axes)):
            raise SpecError(f"{ctx}: axis must be null, an integer or a list of integers, got {_shown(axis)}")
        if not all(-rank <= a < rank for a in axes):
            raise SpecError(f"{ctx}: axis {_shown(axis)} is out of range for inputs of shape "
                            f"(batch, {', '.join(map(str, feature.element_shape))}) (Keras: All `axis` "
                            f"values must be in the range [-ndim, ndim))")
        if any(a % rank == 0 for a in axes):
            raise SpecError(f"{ctx}: axis {_shown(axis)} keeps the batch axis; Normalization reduces over it "
                            f"(Keras: All `axis` values to be kept must have a known shape)")
        return
    bins, boundaries = o["num_bins"], o["bin_boundaries"]
    if bins is None and boundaries is None:
        raise SpecError(f"{ctx}: set one of num_bins and bin_boundaries "
                        f"(Keras: You need to set either `num_bins` or `bin_boundaries`)")
    if bins is not None and boundaries is not None:
        raise SpecError(f"{ctx}: set only one of num_bins and bin_boundaries "
                        f"(Keras: Both `num_bins` and `bin_boundaries` should not be set)")
    if bins is not None and not _is_positive_int(bins):
        raise SpecError(f"{ctx}: num_bins must be a positive integer, got {_shown(bins)}")
    if boundaries is not None:
        if not isinstance(boundaries, list) or not all(map(_is_number, boundaries)) \
                or any(b != b for b in boundaries):
            raise SpecError(f"{ctx}: bin_boundaries must be a list of numbers (no NaN), got {_shown(boundaries)}")
        if boundaries != sorted(boundaries):
            raise SpecError(f"{ctx}: bin_boundaries must be sorted, got {_shown(boundaries)} "
                            f"(Keras, when the layer is called: Expected sorted boundaries)")


def _validate_stateless(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    if feature.layer == "CategoryEncoding":
        size = o["num_tokens"]
        if size is None:
            raise SpecError(f"{ctx}: CategoryEncoding needs 'num_tokens' in config (values must lie in "
                            f"[0, num_tokens)); to learn the categories, use IntegerLookup (Keras: "
                            f"num_tokens must be set to use this layer)")
        if not _is_positive_int(size):
            raise SpecError(f"{ctx}: num_tokens must be a positive integer, got {_shown(size)} "
                            f"(Keras: `num_tokens` must be >= 1)")
        return
    size = o["num_bins"]
    if not _is_int(size):
        raise SpecError(f"{ctx}: num_bins must be a positive integer, got {_shown(size)}")
    if size < 1:
        raise SpecError(f"{ctx}: num_bins must be positive, got {size} (Keras: The "
                        f"`num_bins` for `Hashing` cannot be `None` or non-positive values)")
    _check_int64(ctx, "num_bins", size, "int too big to convert")
    _check_salt(o["salt"], ctx)
    mask = o["mask_value"]
    if mask is not None and not isinstance(mask, str) and not _is_int(mask):
        raise SpecError(f"{ctx}: mask_value must be null, a string or an integer, got {_shown(mask)}")
    _check_int64(ctx, "mask_value", mask, "out-of-range integer")
    if o["output_mode"] == "int" and o.get("dtype") not in (None, "int32", "int64"):
        raise SpecError(f"{ctx}: dtype must be int32 or int64 with output_mode 'int' (Keras: When "
                        f"`output_mode=\"int\"`, `dtype` should be an integer type)")


def _validate_text(o: Dict[str, Any], ctx: str) -> None:
    for key, allowed in (("standardize", STANDARDIZE_OPTIONS), ("split", SPLIT_OPTIONS)):
        value = o[key]
        if value not in allowed and not callable(value) and not _is_callable_ref(value):
            raise SpecError(f"{ctx}: {key} must be one of {allowed}, a callable, or 'module:function'; "
                            f"got {_shown(value)} (Keras: Unknown value for `{key}` argument)")
    ngrams = o["ngrams"]
    widths = ngrams if isinstance(ngrams, (list, tuple)) else [ngrams]
    if ngrams is not None and (not widths or not all(map(_is_int, widths))):
        raise SpecError(f"{ctx}: ngrams must be null, a positive integer or a list of them, got {_shown(ngrams)} "
                        f"(Keras: `ngrams` must be None, an integer, or a tuple of integers)")
    if ngrams is not None and any(n < 1 for n in widths):
        raise SpecError(f"{ctx}: ngrams must be positive, got {_shown(ngrams)}"
                        + (" (Keras: All ngram_widths must be greater than 0)" if widths is ngrams else ""))
    length = o["output_sequence_length"]
    if length is not None:
        if o["output_mode"] != "int":
            raise SpecError(f"{ctx}: output_sequence_length applies to output_mode 'int' only (Keras: "
                            f"`output_sequence_length` must not be set if `output_mode` is not 'int')")
        if not _is_int(length):
            raise SpecError(f"{ctx}: output_sequence_length must be an integer or null, got {_shown(length)} "
                            f"(Keras: `output_sequence_length` must be either None or an integer)")
        if length < 0:
            raise SpecError(f"{ctx}: output_sequence_length must not be negative, got {length} "
                            f"(Keras, when the layer is called: Dimension {length} must be >= 0)")
    if o["ragged"] and o["output_mode"] != "int":
        raise SpecError(f"{ctx}: ragged=True applies to output_mode 'int' only (Keras: `ragged` must "
                        f"not be true if `output_mode` is not 'int')")


def _validate_lookup(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    oov = o["num_oov_indices"]
    if not _is_int(oov):
        raise SpecError(f"{ctx}: num_oov_indices must be a non-negative integer, got {_shown(oov)}")
    if oov < 0:
        raise SpecError(f"{ctx}: num_oov_indices must not be negative, got {oov} (Keras: `num_oov_indices` "
                        f"must be greater than or equal to 0)")
    token_type, dtype = ("an integer", "int64") if feature.is_integer else ("a string", "string")
    for key in ("mask_token", "oov_token"):
        token = o[key]
        if token is not None and (_is_int(token) if feature.is_integer else isinstance(token, str)):
            continue
        if token is not None:
            # Keras compares the mask token with every input, so it must have the input's
            # type; the OOV token is what prepro leaves out of the counts.
            raise SpecError(f"{ctx}: {key} must be {token_type} or null, got {_shown(token)}"
                            + (f" (Keras: Cannot convert {_shown(token)} to EagerTensor of dtype {dtype})"
                               if key == "mask_token" else ""))
    _check_int64(ctx, "mask_token", o["mask_token"], "out-of-range integer")
    _check_int64(ctx, "oov_token", o["oov_token"], None)
    _check_salt(o["salt"], ctx)
    if feature.is_integer:
        if o["vocabulary_dtype"] != "int64":
            raise SpecError(f"{ctx}: vocabulary_dtype must be 'int64', got {_shown(o['vocabulary_dtype'])} "
                            f"(Keras: Only `vocabulary_dtype='int64'` is supported at this time)")
        if o["oov_method"] not in ("floormod", "farmhash"):
            raise SpecError(f"{ctx}: oov_method must be 'floormod' or 'farmhash', got {_shown(o['oov_method'])} "
                            f"(Keras: Allowed values are: ('floormod', 'farmhash'))")
        if o["salt"] is not None and o["oov_method"] != "farmhash":
            raise SpecError(f"{ctx}: salt needs oov_method 'farmhash' (Keras: `salt` can only be used "
                            f"when `oov_method='farmhash'`)")


def _check_salt(salt: Any, ctx: str) -> None:
    if salt is None:
        return
    parts = salt if isinstance(salt, (list, tuple)) and len(salt) == 2 else [salt]
    if not all(map(_is_int, parts)):
        raise SpecError(f"{ctx}: salt must be null, an integer or a list of two, got {_shown(salt)} (Keras: "
                        f"can only be a tuple of 2 integers, or a single integer)")
    for part in parts:
        _check_int64(ctx, "salt", part, "int too big to convert")


def _check_int64(ctx: str, key: str, value: Any, keras_words: Optional[str]) -> None:
    """Keras hands these to TensorFlow as int64; an integer outside fails when the layer is called."""
    if _is_int(value) and not INT64[0] <= value <= INT64[1]:
        raise SpecError(f"{ctx}: {key} {value} does not fit in 64 bits"
                        + (f" (Keras, when the layer is called: {keras_words})" if keras_words else ""))


def _codec_name(encoding: str) -> Optional[str]:
    import codecs
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def normalization_axes(feature: FeatureSpec) -> tuple:
    """Kept axes of (batch, *element_shape), non-negative and sorted, as Keras keeps them."""
    rank = 1 + len(feature.element_shape)
    return tuple(sorted(a % rank for a in _as_axes(feature.options["axis"])))


def _as_axes(axis: Any) -> tuple:
    """Normalization's `axis` option as a tuple: None keeps no axis, an int one axis."""
    return () if axis is None else tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


def token_start(feature: FeatureSpec) -> int:
    """Index of the first learned token (Keras's `_token_start_index`): mask and OOV slots."""
    o = feature.options
    if feature.is_text:
        return 2 if o["output_mode"] == "int" else 1
    mask_slot = 1 if o["mask_token"] is not None and o["output_mode"] == "int" else 0
    return mask_slot + o["num_oov_indices"]


def special_tokens(feature: FeatureSpec):
    """The mask and OOV tokens that Keras removes from the counts before ranking."""
    o = feature.options
    if feature.is_text:
        return ["", "[UNK]"]
    return [t for t in (o["mask_token"], o["oov_token"]) if t is not None]


def needs_document_frequencies(feature: FeatureSpec) -> bool:
    """Document frequencies cost a second count; only tf_idf and a df threshold use them."""
    return feature.options["output_mode"] == "tf_idf" or feature.min_document_frequency > 1


def max_learned_tokens(feature: FeatureSpec) -> Optional[int]:
    m = feature.options["max_tokens"]
    return None if m is None else m - token_start(feature)


def _is_callable_ref(value: Any) -> bool:
    return isinstance(value, str) and ":" in value and all(value.split(":", 1))


def resolve_callable(ref: str) -> Callable:
    """Imports 'package.module:function' (only the analyze job does this, from the user's spec)."""
    module, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise SpecError(f"cannot import {_shown(ref)}: {e}") from None
    if not callable(obj):
        raise SpecError(f"{_shown(ref)} is not callable")
    return obj


def check_callables(spec: Spec) -> None:
    """Fails early, naming the feature, if a 'module:function' in the spec does not import."""
    for name, feature in sorted(spec.features.items()):
        for key in ("standardize", "split"):
            value = feature.config.get(key)
            if _is_callable_ref(value):
                try:
                    resolve_callable(value)
                except SpecError as e:
                    raise SpecError(f"feature '{name}': {key}: {e}") from None


def custom_objects(spec: Spec) -> Dict[str, Callable]:
    """{recorded name: callable} for the spec's standardize/split callables (given as
    objects or as "module:function"), so the job can rebuild its own layers."""
    out = {}
    for feature in spec.features.values():
        for key in ("standardize", "split"):
            value = feature.config.get(key)
            if callable(value):
                out[callable_name(value)] = value
            elif _is_callable_ref(value):
                out[value] = resolve_callable(value)
    return out


def callables_are_refs(spec: Spec) -> bool:
    """True if every standardize/split callable is a "module:function" reference (so
    another process can import it), none a Python object."""
    return not any(callable(f.config.get(key)) for f in spec.features.values() for key in ("standardize", "split"))


def callable_name(fn: Any) -> str:
    """How a callable is recorded in artifacts: by name, never by value."""
    if isinstance(fn, str):
        return fn
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _plain(config: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in config.items():
        if callable(v):
            v = callable_name(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out
