"""`prepro.adapt`: the scalable drop-in for `layer.adapt(data)` in notebooks and scripts.

    vectorize = keras.layers.TextVectorization(max_tokens=20000)
    carrier = keras.layers.StringLookup(name="carrier")
    fare = keras.layers.Normalization(name="fare")
    prepro.adapt([vectorize, carrier, fare], ["gs://bucket/reviews-*.csv"], format="csv",
                 sources={vectorize.name: "text"})

The layers' options become a spec, the analyze job runs on the inputs, and each layer
is left in the state adapt() would leave it in: lookups and text get their vocabulary
(and IDF weights) through `set_vocabulary`, Normalization its adapted mean and variance,
Discretization its bin boundaries. Everything that can be refused is refused before
the job runs. Artifacts are kept at `output` when one is given.
"""

import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from prepro import keras_check
from prepro import layers as prepro_layers
from prepro import spec as spec_lib
from prepro.spec import SpecError

# Keras's Hashing and CategoryEncoding have no adapt(): there is no state to compute.
ADAPTABLE = ("TextVectorization", "StringLookup", "IntegerLookup", "Normalization", "Discretization")


def layer_feature(layer, source: Any, extra: Optional[Mapping[str, Any]] = None) -> Dict:
    """A spec entry from a constructed Keras layer's own options; `extra` adds spec keys
    beyond Keras's options (shape, weight, quantiles, min_count, invalid_utf8...)."""
    kind = type(layer).__name__
    if kind not in ADAPTABLE:
        raise SpecError(f"layer {layer.name!r}: prepro adapts {list(ADAPTABLE)}, not {kind}"
                        + (" (Keras's has no adapt(): it has no state to learn)" if kind in spec_lib.LAYER_DEFAULTS
                           else ""))
    _refuse_preset_state(layer, kind)
    config = layer.get_config()
    defaults = spec_lib.LAYER_DEFAULTS[kind]
    options = {k: _plain(config[k]) for k in defaults if k in config and k != "name"}
    for key in ("standardize", "split"):
        value = getattr(layer, f"_{key}", None)
        if callable(value):
            options[key] = value  # the object itself; the spec records its name
    if kind == "Normalization" and options.get("axis") == []:
        options["axis"] = None  # Keras keeps axis=None as no kept axes
    options = {k: v for k, v in options.items() if v != defaults.get(k) or k == "output_mode"}
    return {"source": source, "layer": kind, "config": options, **dict(extra or {})}


def _plain(value):
    """Keras's config values as a spec holds them (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _refuse_preset_state(layer, kind: str) -> None:
    """Keras refuses adapt() on a layer constructed with its state; so does prepro."""
    preset = {"Normalization": getattr(layer, "input_mean", None) is not None,
              "Discretization": kind == "Discretization" and layer.num_bins is None}.get(kind, False)
    if preset:
        raise SpecError(f"layer {layer.name!r}: a {kind} constructed with its state ("
                        + ("mean and variance" if kind == "Normalization" else "bin_boundaries")
                        + ") cannot be adapted" + (" (Keras: Cannot adapt a `Discretization` layer that has been "
                                                   "initialized with `bin_boundaries`, use `num_bins` instead)"
                                                   if kind == "Discretization" else ""))


def adapt_layers(layers: Union[Sequence, Mapping], inputs: Union[str, List[str]], format: str = "text",
                 output: Optional[str] = None, sources: Optional[Mapping[str, Any]] = None,
                 runner_options: Optional[List[str]] = None,
                 feature_options: Optional[Mapping[str, Mapping[str, Any]]] = None):
    """Computes every layer's state with the Beam job and sets it on the layers.

    `layers`: layers (named by `layer.name`) or a {feature: layer} mapping.
    `sources`: feature -> input column (a list of columns for Normalization and
    Discretization); default "text" for the text format, else the feature name.
    `feature_options`: feature -> extra spec keys, e.g. {"fare": {"quantiles": "exact"}}.
    Returns the same layers, adapted. Every refusal (a layer prepro cannot adapt, an
    option Keras would refuse) happens before the job starts.
    """
    from pipelines.analyze import run_analyze
    named = dict(layers) if isinstance(layers, Mapping) else {layer.name: layer for layer in layers}
    sources, extras = dict(sources or {}), dict(feature_options or {})
    features = {name: layer_feature(layer, sources.get(name, "text" if format == "text" else name), extras.get(name))
                for name, layer in named.items()}
    spec = spec_lib.spec_from_dict({"features": features}, where="prepro.adapt")
    for name, layer in named.items():
        _refuse_built_for_other_shape(layer, spec.features[name])
    target = output or tempfile.mkdtemp(prefix="prepro-adapt-")
    try:
        run_analyze(spec, [inputs] if isinstance(inputs, str) else list(inputs), format, target,
                    pipeline_args=runner_options)
        arts = prepro_layers.load(target)
        for name, layer in named.items():
            set_adapted_state(layer, arts, name)
    finally:
        if output is None:
            shutil.rmtree(target, ignore_errors=True)
    return layers


def set_adapted_state(layer, arts, name: str) -> None:
    """Leaves `layer` as adapt() leaves it, from feature `name` of the artifact."""
    kind = type(layer).__name__
    if kind == "Normalization":
        return _set_moments(layer, *arts.moments(name), arts.spec.features[name].element_shape)
    if kind == "Discretization":
        # adapt() sets exactly this attribute in finalize_state(); the layer has no weights.
        layer.bin_boundaries = arts.bin_boundaries(name)
        return None
    # An in-memory vocabulary, as adapt() leaves it: the layer does not depend on the
    # artifact files staying where they are.
    if layer.get_config().get("output_mode") == "tf_idf":
        return layer.set_vocabulary(*arts.tf_idf_state(name))
    return layer.set_vocabulary(arts.vocabulary(name))


def _refuse_built_for_other_shape(layer, feature) -> None:
    """A Normalization already built for another input shape cannot take the moments
    the job will compute: refused before the job, not after it."""
    if feature.layer != "Normalization" or not layer.built:
        return
    want = keras_check.kept_shape(feature)
    if tuple(layer.adapt_mean.shape) != want:
        raise SpecError(f"layer {layer.name!r} was built for moments of shape {tuple(layer.adapt_mean.shape)}, "
                        f"but feature {feature.name!r} (source {feature.source!r}, shape "
                        f"{list(feature.element_shape)}) gives moments of shape {want}; build it for the input "
                        f"it will get, or leave it unbuilt")


def _set_moments(layer, mean: np.ndarray, variance: np.ndarray, element_shape: tuple) -> None:
    """adapt() accumulates into `adapt_mean` / `adapt_variance`, then `finalize_state`
    broadcasts them into the weights the layer computes with; so does this. An unbuilt
    layer is built for the rows the job read, (batch, *element_shape)."""
    if not layer.built:
        layer.build((None, *element_shape))
    if tuple(layer.adapt_mean.shape) != mean.shape:
        raise ValueError(f"layer {layer.name!r} was built for moments of shape {tuple(layer.adapt_mean.shape)}, "
                         f"but the job computed {mean.shape}; build it for the input it will get, or not at all")
    layer.adapt_mean.assign(mean.astype(layer.adapt_mean.dtype))
    layer.adapt_variance.assign(variance.astype(layer.adapt_variance.dtype))
    layer.finalize_state()


__all__ = ["adapt_layers", "layer_feature", "set_adapted_state", "ADAPTABLE"]
