"""prepro: Keras preprocessing-layer state computed by Beam, loaded into stock layers.

    arts = prepro.load("artifacts/")
    vectorize = arts.layer("review")   # keras.layers.TextVectorization, no adapt()

The library a training job imports: spec, artifact format, statistics and layer
construction. Beam is imported only by `prepro.adapt` and the analyze job.
"""

__version__ = "0.1.0"

from prepro.artifacts import ArtifactError
from prepro.layers import Artifacts, load
from prepro.spec import Spec, SpecError, load_spec
from prepro.warm_start import remap_embedding, remap_model_embeddings, vocabulary_mapping


def diff(old, new):
    """What changed between two artifacts (paths or `Artifacts`): a `prepro.compare.Diff`."""
    from prepro.compare import diff as compare
    return compare(old, new)


def adapt(layers, inputs, format: str = "text", output=None, sources=None, runner_options=None,
          feature_options=None):
    """The scalable drop-in for `layer.adapt(data)` for TextVectorization, StringLookup,
    IntegerLookup, Normalization and Discretization; see `pipelines.adapt.adapt_layers`."""
    from pipelines.adapt import adapt_layers
    return adapt_layers(layers, inputs, format=format, output=output, sources=sources,
                        runner_options=runner_options, feature_options=feature_options)


__all__ = ["Artifacts", "ArtifactError", "Spec", "SpecError", "adapt", "diff", "load", "load_spec", "remap_embedding",
           "remap_model_embeddings", "vocabulary_mapping", "__version__"]
