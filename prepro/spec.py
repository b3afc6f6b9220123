"""The feature spec: which column feeds which stock Keras layer, with which options.

A spec is YAML (or the equivalent dict). Each feature names its source column, a Keras
layer class and that layer's own constructor options, so a Keras user already knows
every option:

```yaml
features:
  review:  {source: text,    layer: TextVectorization, config: {max_tokens: 20000}}
  carrier: {source: carrier, layer: StringLookup,      config: {num_oov_indices: 1}}
  flight:  {source: flight,  layer: IntegerLookup,     config: {max_tokens: 5000}}
```

Options a layer would receive from `adapt()` (`vocabulary`, `idf_weights`) are not
allowed: producing them is prepro's job. `standardize` and `split` may name a callable
as `"package.module:function"`; the analyze job imports it, `prepro.load` never does
(pass it through `custom_objects`, as with Keras).
"""

import dataclasses
import importlib
from typing import Any, Callable, Dict, Mapping, Optional

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
}
# Set by the analysis, never by the user.
STATE_OPTIONS = ("vocabulary", "idf_weights")

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
    source: str
    layer: str
    config: Mapping[str, Any]
    invalid_utf8: str = "error"
    min_count: int = 1
    min_document_frequency: int = 1

    @property
    def options(self) -> Dict[str, Any]:
        return {**LAYER_DEFAULTS[self.layer], **self.config}

    @property
    def is_text(self) -> bool:
        return self.layer == "TextVectorization"

    @property
    def is_integer(self) -> bool:
        return self.layer == "IntegerLookup"

    def to_dict(self) -> Dict[str, Any]:
        out = {"source": self.source, "layer": self.layer, "config": _plain(dict(self.config))}
        if self.invalid_utf8 != "error":
            out["invalid_utf8"] = self.invalid_utf8
        for key in THRESHOLDS:
            if getattr(self, key) != 1:
                out[key] = getattr(self, key)
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
    unknown = set(entry) - {"source", "layer", "config", "invalid_utf8", *THRESHOLDS}
    if unknown:
        raise SpecError(f"{ctx}: unknown keys {sorted(unknown)}")
    layer = entry.get("layer")
    if layer not in LAYER_DEFAULTS:
        raise SpecError(f"{ctx}: layer must be one of {sorted(LAYER_DEFAULTS)}, got {layer!r}")
    source = entry.get("source", name)
    if not isinstance(source, str) or not source:
        raise SpecError(f"{ctx}: source must be a column name")
    config = dict(entry.get("config") or {})
    invalid_utf8 = entry.get("invalid_utf8", "error")
    if invalid_utf8 not in INVALID_UTF8_POLICIES:
        raise SpecError(f"{ctx}: invalid_utf8 must be one of {INVALID_UTF8_POLICIES}")
    thresholds = {key: entry.get(key, 1) for key in THRESHOLDS}
    for key, value in thresholds.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{ctx}: {key} must be a positive integer, got {value!r}")
    feature = FeatureSpec(name, source, layer, config, invalid_utf8, **thresholds)
    validate_options(feature, ctx)
    return feature


def validate_options(feature: FeatureSpec, ctx: str) -> None:
    """Rejects what Keras would reject, early, before a long job starts."""
    allowed = LAYER_DEFAULTS[feature.layer]
    for key in feature.config:
        if key in STATE_OPTIONS:
            raise SpecError(f"{ctx}: '{key}' is computed by prepro; remove it from config")
        if key not in allowed:
            raise SpecError(f"{ctx}: {feature.layer} has no option '{key}' "
                            f"(options: {', '.join(sorted(allowed))})")
    o = feature.options
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
