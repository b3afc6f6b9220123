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

LOOKUP_MODES = ("int", "one_hot", "multi_hot", "count")
TEXT_MODES = ("int", "multi_hot", "count", "tf_idf")
STANDARDIZE_OPTIONS = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
SPLIT_OPTIONS = (None, "whitespace", "character")
INVALID_UTF8_POLICIES = ("error", "replace", "skip")
THRESHOLDS = ("min_count", "min_document_frequency")


class SpecError(ValueError):
    """A spec that prepro cannot honour; the message names the feature."""


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
    weight: Optional[str] = None        # Discretization: a row-weight column
    quantiles: str = "sketch"           # Discretization: "sketch" or "exact"
    rank_error: float = DEFAULT_RANK_ERROR  # Discretization sketch: max rank error / total weight

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
        if isinstance(self.source, (list, tuple)):
            out["source"] = list(self.source)
        for key, default in (("shape", None), ("weight", None), ("quantiles", "sketch"),
                             ("rank_error", DEFAULT_RANK_ERROR)):
            if getattr(self, key) != default and self.is_numeric:
                out[key] = list(getattr(self, key)) if key == "shape" else getattr(self, key)
        return out


@dataclasses.dataclass(frozen=True)
class Spec:
    features: Mapping[str, FeatureSpec]

    @property
    def sources(self):
        return sorted({f.source for f in self.features.values()})

    def to_dict(self) -> Dict[str, Any]:
        return {"features": {n: f.to_dict() for n, f in sorted(self.features.items())}}


def load_spec(path: str) -> Spec:
    """Reads a YAML spec from a local path or any path TensorFlow/Beam file systems read."""
    import yaml
    with open_text(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {e}") from None
    return spec_from_dict(raw, where=path)


def open_text(path: str):
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems  # gs:// and friends
        import io
        return io.TextIOWrapper(FileSystems.open(path), encoding="utf-8")
    return open(path, encoding="utf-8")


def spec_from_dict(raw: Any, where: str = "spec") -> Spec:
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict) or not raw["features"]:
        raise SpecError(f"{where}: expected a mapping with a non-empty 'features' mapping")
    unknown = set(raw) - {"features"}
    if unknown:
        raise SpecError(f"{where}: unknown top-level keys {sorted(unknown)}")
    features = {}
    for name, entry in raw["features"].items():
        features[str(name)] = _feature_from_dict(str(name), entry, where)
    return Spec(features)


def _feature_from_dict(name: str, entry: Any, where: str) -> FeatureSpec:
    ctx = f"{where}: feature '{name}'"
    if not isinstance(entry, dict):
        raise SpecError(f"{ctx}: expected a mapping with source, layer and config")
    unknown = set(entry) - {"source", "layer", "config", "invalid_utf8", *THRESHOLDS, *NUMERIC_KEYS}
    if unknown:
        raise SpecError(f"{ctx}: unknown keys {sorted(unknown)}")
    layer = entry.get("layer")
    if layer not in LAYER_DEFAULTS:
        raise SpecError(f"{ctx}: layer must be one of {sorted(LAYER_DEFAULTS)}, got {layer!r}")
    source = entry.get("source", name)
    if layer in NUMERIC_LAYERS and isinstance(source, list) and source \
            and all(isinstance(c, str) and c for c in source):
        source = tuple(source)
    elif not isinstance(source, str) or not source:
        raise SpecError(f"{ctx}: source must be a column name"
                        + (" or a list of them" if layer in NUMERIC_LAYERS else ""))
    if layer not in NUMERIC_LAYERS and set(entry) & set(NUMERIC_KEYS):
        raise SpecError(f"{ctx}: {sorted(set(entry) & set(NUMERIC_KEYS))} apply to "
                        f"{' and '.join(NUMERIC_LAYERS)} only")
    config = dict(entry.get("config") or {})
    invalid_utf8 = entry.get("invalid_utf8", "error")
    if invalid_utf8 not in INVALID_UTF8_POLICIES:
        raise SpecError(f"{ctx}: invalid_utf8 must be one of {INVALID_UTF8_POLICIES}")
    if (layer in NUMERIC_LAYERS or layer in STATELESS_LAYERS) and set(entry) & set(THRESHOLDS):
        raise SpecError(f"{ctx}: {sorted(set(entry) & set(THRESHOLDS))} apply to vocabulary layers only")
    thresholds = {key: entry.get(key, 1) for key in THRESHOLDS}
    for key, value in thresholds.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{ctx}: {key} must be a positive integer, got {value!r}")
    feature = FeatureSpec(name, source, layer, config, invalid_utf8, **thresholds,
                          **_numeric_keys(entry, source, ctx))
    validate_options(feature, ctx)
    return feature


NUMERIC_KEYS = ("shape", "weight", "quantiles", "rank_error")


def _numeric_keys(entry: Dict[str, Any], source: Any, ctx: str) -> Dict[str, Any]:
    out = {}
    shape = entry.get("shape")
    if shape is not None:
        if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 1 for d in shape)):
            raise SpecError(f"{ctx}: shape must be a list of positive integers, got {shape!r}")
        if isinstance(source, tuple):
            raise SpecError(f"{ctx}: shape applies to one list column, not to stacked columns")
        out["shape"] = tuple(shape)
    if entry.get("weight") is not None:
        if entry.get("layer") != "Discretization" or not isinstance(entry["weight"], str):
            raise SpecError(f"{ctx}: weight (a column name) applies to Discretization only")
        out["weight"] = entry["weight"]
    if "quantiles" in entry:
        if entry["quantiles"] not in QUANTILE_METHODS:
            raise SpecError(f"{ctx}: quantiles must be one of {QUANTILE_METHODS}")
        out["quantiles"] = entry["quantiles"]
    if "rank_error" in entry:
        r = entry["rank_error"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise SpecError(f"{ctx}: rank_error must be a number in (0, 1), got {r!r}")
        out["rank_error"] = float(r)
    epsilon = (entry.get("config") or {}).get("epsilon")
    if epsilon is not None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
            raise SpecError(f"{ctx}: epsilon must be a number in (0, 1), got {epsilon!r}")
        # Keras's epsilon is adapt()'s error tolerance; a tighter one tightens the sketch,
        # a looser one never loosens prepro's default.
        out.setdefault("rank_error", min(float(epsilon), DEFAULT_RANK_ERROR))
    return out


def validate_options(feature: FeatureSpec, ctx: str) -> None:
    """Rejects what Keras would reject, early, before a long job starts."""
    allowed = LAYER_DEFAULTS[feature.layer]
    for key in feature.config:
        if key in STATE_OPTIONS:
            raise SpecError(f"{ctx}: '{key}' is computed by prepro; remove it from config")
        if key not in allowed and key not in BASE_LAYER_OPTIONS:
            raise SpecError(f"{ctx}: {feature.layer} has no option '{key}' "
                            f"(options: {', '.join(sorted(allowed))})")
    o = feature.options
    for key, value in o.items():
        if value is REQUIRED:
            raise SpecError(f"{ctx}: {feature.layer} needs '{key}' in config")
    if feature.is_numeric:
        return _validate_numeric(feature, o, ctx)
    if feature.is_stateless:
        return _validate_stateless(feature, o, ctx)
    if o["max_tokens"] is not None and (not isinstance(o["max_tokens"], int) or o["max_tokens"] < 1):
        raise SpecError(f"{ctx}: max_tokens must be a positive integer or null")
    if o.get("invert"):
        raise SpecError(f"{ctx}: invert=True layers are not built by prepro yet")
    if feature.is_text:
        _validate_text(o, ctx)
    else:
        if o["output_mode"] not in LOOKUP_MODES:
            # adapt() counts documents for a lookup by the shape of each adapted batch
            # (a 1-D batch is one document), which a file-based job cannot reproduce.
            raise SpecError(f"{ctx}: output_mode must be one of {LOOKUP_MODES}; tf_idf is "
                            f"supported for TextVectorization, whose documents are rows")
        if not isinstance(o["num_oov_indices"], int) or o["num_oov_indices"] < 0:
            raise SpecError(f"{ctx}: num_oov_indices must be a non-negative integer")
        token_type = int if feature.is_integer else str
        for key in ("mask_token", "oov_token"):
            if o[key] is not None and (not isinstance(o[key], token_type) or isinstance(o[key], bool)):
                raise SpecError(f"{ctx}: {key} must be {token_type.__name__} or null")
    if o["max_tokens"] is not None and o["max_tokens"] <= token_start(feature):
        raise SpecError(f"{ctx}: max_tokens={o['max_tokens']} leaves no room for tokens "
                        f"after {token_start(feature)} reserved indices")


def _validate_numeric(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    rank = 1 + len(feature.element_shape)  # (batch, *element_shape)
    if feature.layer == "Normalization":
        if o["invert"]:
            raise SpecError(f"{ctx}: invert=True layers are not built by prepro yet")
        axis = o["axis"]
        axes = () if axis is None else tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
        if not all(isinstance(a, int) and not isinstance(a, bool) and -rank <= a < rank for a in axes):
            raise SpecError(f"{ctx}: axis {axis!r} is out of range for inputs of shape "
                            f"(batch, {', '.join(map(str, feature.element_shape))})")
        if any(a % rank == 0 for a in axes):
            raise SpecError(f"{ctx}: axis {axis!r} keeps the batch axis; Normalization reduces over it")
        return
    bins, boundaries = o["num_bins"], o["bin_boundaries"]
    if (bins is None) == (boundaries is None):
        raise SpecError(f"{ctx}: set exactly one of num_bins and bin_boundaries")
    if bins is not None and (not isinstance(bins, int) or isinstance(bins, bool) or bins < 1):
        raise SpecError(f"{ctx}: num_bins must be a positive integer")
    if boundaries is not None and (not isinstance(boundaries, list) or
                                   any(not isinstance(b, (int, float)) for b in boundaries) or
                                   boundaries != sorted(boundaries)):
        raise SpecError(f"{ctx}: bin_boundaries must be a sorted list of numbers")
    if o["output_mode"] not in ("int", "one_hot", "multi_hot", "count"):
        raise SpecError(f"{ctx}: output_mode must be one of int, one_hot, multi_hot, count")


def _validate_stateless(feature: FeatureSpec, o: Dict[str, Any], ctx: str) -> None:
    size_key = "num_bins" if feature.layer == "Hashing" else "num_tokens"
    size = o[size_key]
    if size is None and feature.layer == "CategoryEncoding":
        raise SpecError(f"{ctx}: CategoryEncoding needs 'num_tokens' in config (values must lie in "
                        f"[0, num_tokens)); to learn the categories, use IntegerLookup")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise SpecError(f"{ctx}: {size_key} must be a positive integer, got {size!r}")
    modes = LOOKUP_MODES if feature.layer == "Hashing" else ("one_hot", "multi_hot", "count")
    if o["output_mode"] not in modes:
        raise SpecError(f"{ctx}: output_mode must be one of {modes}")
    if o["sparse"] and o["output_mode"] == "int":
        raise SpecError(f"{ctx}: sparse applies to one_hot, multi_hot and count outputs only")
    if feature.layer == "Hashing":
        salt = o["salt"]
        if salt is not None and not (_is_int(salt) or isinstance(salt, (list, tuple)) and
                                     len(salt) == 2 and all(map(_is_int, salt))):
            raise SpecError(f"{ctx}: salt must be null, an integer or a list of two integers")
        if o["mask_value"] is not None and not isinstance(o["mask_value"], (str, int)):
            raise SpecError(f"{ctx}: mask_value must be null, a string or an integer")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalization_axes(feature: FeatureSpec) -> tuple:
    """Kept axes of (batch, *element_shape), non-negative and sorted, as Keras keeps them."""
    rank = 1 + len(feature.element_shape)
    axis = feature.options["axis"]
    axes = () if axis is None else tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    return tuple(sorted(a % rank for a in axes))


def _validate_text(o: Dict[str, Any], ctx: str) -> None:
    if o["output_mode"] not in TEXT_MODES:
        raise SpecError(f"{ctx}: output_mode must be one of {TEXT_MODES}")
    for key, allowed in (("standardize", STANDARDIZE_OPTIONS), ("split", SPLIT_OPTIONS)):
        value = o[key]
        if value not in allowed and not callable(value) and not _is_callable_ref(value):
            raise SpecError(f"{ctx}: {key} must be one of {allowed}, a callable, "
                            f"or 'module:function'; got {value!r}")
    ngrams = o["ngrams"]
    if ngrams is not None and not (
            (isinstance(ngrams, int) and ngrams >= 1)
            or (isinstance(ngrams, (list, tuple)) and ngrams and all(isinstance(n, int) and n >= 1 for n in ngrams))):
        raise SpecError(f"{ctx}: ngrams must be null, a positive integer or a list of them")
    if o["output_sequence_length"] is not None and o["output_mode"] != "int":
        raise SpecError(f"{ctx}: output_sequence_length is only valid with output_mode 'int'")


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
        raise SpecError(f"cannot import {ref!r}: {e}") from None
    if not callable(obj):
        raise SpecError(f"{ref!r} is not callable")
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
