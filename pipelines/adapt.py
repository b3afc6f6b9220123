"""`prepro.adapt`: the scalable drop-in for `layer.adapt(data)` in notebooks and scripts.

    vectorize = keras.layers.TextVectorization(max_tokens=20000)
    carrier = keras.layers.StringLookup(name="carrier")
    prepro.adapt([vectorize, carrier], ["gs://bucket/reviews-*.csv"], format="csv",
                 sources={vectorize.name: "text"})

The layers' options become a spec, the analyze job runs on the inputs, and each
layer receives its vocabulary through `set_vocabulary`, exactly the state adapt()
would have given it. Artifacts are kept at `output` when one is given.
"""

import shutil
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence, Union

from prepro import layers as prepro_layers
from prepro import spec as spec_lib


def layer_feature(layer, source: str) -> Dict:
    """A spec entry from a constructed (unadapted) Keras layer's own options."""
    kind = type(layer).__name__
    if kind not in spec_lib.LAYER_DEFAULTS:
        raise spec_lib.SpecError(f"layer {layer.name!r}: prepro adapts {sorted(spec_lib.LAYER_DEFAULTS)}, "
                                 f"not {kind}")
    config = layer.get_config()
    options = {k: config[k] for k in spec_lib.LAYER_DEFAULTS[kind] if k in config and k != "name"}
    for key in ("standardize", "split"):
        value = getattr(layer, f"_{key}", None)
        if callable(value):
            options[key] = value  # the object itself; the spec records its name
    defaults = spec_lib.LAYER_DEFAULTS[kind]
    options = {k: v for k, v in options.items() if v != defaults.get(k) or k == "output_mode"}
    if isinstance(options.get("ngrams"), tuple):
        options["ngrams"] = list(options["ngrams"])
    return {"source": source, "layer": kind, "config": options}


def adapt_layers(layers: Union[Sequence, Mapping], inputs: Union[str, List[str]], format: str = "text",
                 output: Optional[str] = None, sources: Optional[Mapping[str, str]] = None,
                 runner_options: Optional[List[str]] = None):
    """Computes every layer's state with the Beam job and sets it on the layers.

    `layers`: layers (named by `layer.name`) or a {feature: layer} mapping.
    `sources`: feature -> input column; default "text" for the text format, else the
    feature name. Returns the same layers, adapted.
    """
    from pipelines.analyze import run_analyze
    named = dict(layers) if isinstance(layers, Mapping) else {layer.name: layer for layer in layers}
    sources = dict(sources or {})
    features = {name: layer_feature(layer, sources.get(name, "text" if format == "text" else name))
                for name, layer in named.items()}
    spec = spec_lib.spec_from_dict({"features": features}, where="prepro.adapt")
    target = output or tempfile.mkdtemp(prefix="prepro-adapt-")
    try:
        run_analyze(spec, [inputs] if isinstance(inputs, str) else list(inputs), format, target,
                    pipeline_args=runner_options)
        arts = prepro_layers.load(target)
        for name, layer in named.items():
            # An in-memory vocabulary, as adapt() leaves it: the layer does not depend
            # on the artifact files staying where they are.
            if layer.get_config().get("output_mode") == "tf_idf":
                layer.set_vocabulary(*arts.tf_idf_state(name))
            else:
                layer.set_vocabulary(arts.vocabulary(name))
    finally:
        if output is None:
            shutil.rmtree(target, ignore_errors=True)
    return layers


__all__ = ["adapt_layers", "layer_feature"]
