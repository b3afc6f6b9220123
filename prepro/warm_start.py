"""Warm start: carry a trained embedding from one vocabulary to the next, as TF1's
`warm_start` with `VocabInfo` did and Keras 3 has no equivalent for.

>>> old, new = prepro.load("arts-monday/"), prepro.load("arts-tuesday/")
>>> matrix = prepro.remap_embedding(old, new, "review", old_matrix)        # NumPy in, NumPy out
>>> model = prepro.remap_model_embeddings(model, old, new, "review")       # a new Keras model

Index layout (Keras's IndexLookup, `spec.token_start`): the mask slot (in "int" mode,
when the layer has a mask token), then `num_oov_indices` OOV slots, then the learned
tokens in vocabulary order. Mask and OOV rows stay where they are (the layout is the
spec's, which both artifacts must share); a token in both vocabularies gets its old row
at its new index; a new token gets a row from `initializer` (zeros by default, as
VocabInfo's `backup_initializer`). A token only the old vocabulary had loses its row.
"""

from typing import Any, Optional, Tuple

import numpy as np

from prepro import artifacts, spec as spec_lib

_LOOKUPS = ("TextVectorization", "StringLookup", "IntegerLookup")


def vocabulary_mapping(old, new, feature: str) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """(old indices, new indices) of the tokens both vocabularies learned, with each
    layer's vocabulary size (mask and OOV slots included); `old` and `new` are
    `prepro.Artifacts` of the same feature spec (options other than `index_policy`)."""
    old_entry, new_entry = _entry(old, feature), _entry(new, feature)
    if old_entry["layer"] not in _LOOKUPS:
        raise ValueError(f"feature {feature!r} is a {old_entry['layer']}; embeddings remap the indices of "
                         f"{', '.join(_LOOKUPS)}")
    ignored = (*artifacts.RESULT_KEYS, "index_policy")  # what the jobs learned, and the update policy
    mine = {k: v for k, v in old_entry.items() if k not in ignored}
    theirs = {k: v for k, v in new_entry.items() if k not in ignored}
    if mine != theirs:
        raise ValueError(f"feature {feature!r} has other options in the two artifacts ({_differ(mine, theirs)}): "
                         f"the index layouts may differ")
    start = old_entry["state"]["token_start"]
    old_tokens, new_tokens = old.vocabulary(feature), new.vocabulary(feature)
    position = {token: i for i, token in enumerate(old_tokens)}
    pairs = [(position[t], i) for i, t in enumerate(new_tokens) if t in position]
    old_at = np.array([start + o for o, _ in pairs], np.int64)
    new_at = np.array([start + n for _, n in pairs], np.int64)
    return old_at, new_at, start + len(old_tokens), start + len(new_tokens)


def remap_embedding(old, new, feature: str, old_matrix, initializer: Any = "zeros", rows: Optional[int] = None,
                    seed: Optional[int] = None) -> np.ndarray:
    """The embedding matrix for `new`'s vocabulary of `feature`: mask and OOV rows as
    they were, every token both vocabularies hold moved to its new index, the others
    from `initializer` (a Keras initializer, its name, or a function of (shape, dtype)
    returning an array). `rows`: the new matrix's rows (default: the new vocabulary size,
    mask and OOV slots included; more rows are initialized, as a padded `max_tokens`
    layout has). `old_matrix` needs at least the old vocabulary's rows."""
    matrix = np.asarray(old_matrix)
    old_at, new_at, old_size, new_size = vocabulary_mapping(old, new, feature)
    if matrix.ndim != 2 or matrix.shape[0] < old_size:
        raise ValueError(f"old_matrix has shape {matrix.shape}; feature {feature!r}'s old vocabulary needs "
                         f"(at least {old_size}, dim)")
    rows = new_size if rows is None else rows
    if rows < new_size:
        raise ValueError(f"rows={rows}, but feature {feature!r}'s new vocabulary needs {new_size}")
    out = np.array(_initial(initializer, (rows, matrix.shape[1]), matrix.dtype, seed), dtype=matrix.dtype)
    start = _entry(new, feature)["state"]["token_start"]
    out[:start] = matrix[:start]  # mask and OOV rows
    out[new_at] = matrix[old_at]
    return out


def _initial(initializer, shape, dtype, seed):
    if callable(initializer) and not _is_keras_initializer(initializer):
        return np.asarray(initializer(shape, dtype))
    import keras
    init = keras.initializers.get(initializer)
    if seed is not None and hasattr(init, "seed"):
        init = init.__class__.from_config({**init.get_config(), "seed": seed})
    return keras.ops.convert_to_numpy(init(shape, dtype=str(np.dtype(dtype))))


def _is_keras_initializer(value) -> bool:
    try:
        import keras
    except ImportError:
        return False
    return isinstance(value, keras.initializers.Initializer)


def remap_model_embeddings(model, old, new, feature: str, initializer: Any = "zeros", seed: Optional[int] = None):
    """A copy of the Keras functional `model` for `new`'s vocabulary of `feature`: its
    lookup layer for the feature (named as `prepro.load(...).layer(feature)` names it, if
    the model holds one) replaced by `new`'s, and every Embedding layer fed by it (or by
    the model input named `feature`, the host/device split's) resized with its matrix
    remapped (`remap_embedding`); every other weight copied. Refuses a model in which no
    Embedding layer is fed by the feature."""
    import keras
    lookup_name = _lookup_name(old, feature)
    embeddings = _embeddings_fed_by(model, {feature, lookup_name})
    if not embeddings:
        raise ValueError(f"no Embedding layer of model {model.name!r} is fed by feature {feature!r} (a model "
                         f"input named {feature!r} or a layer named {lookup_name!r})")
    _, _, _, new_size = vocabulary_mapping(old, new, feature)
    old_size = _size(old, feature)

    def clone(layer):
        if layer.name == lookup_name:
            return new.layer(feature)  # named as the old one: both are named after the feature
        if layer.name in embeddings:
            extra = max(0, layer.input_dim - old_size)  # a padded layout keeps its padding
            config = {**layer.get_config(), "input_dim": new_size + extra}
            return layer.__class__.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, copy.layers):
        if source.name in embeddings:
            (matrix,) = source.get_weights()
            target.set_weights([remap_embedding(old, new, feature, matrix, initializer,
                                                rows=target.input_dim, seed=seed)])
        elif source.name != lookup_name and source.weights:
            target.set_weights(source.get_weights())
    return copy


def _embeddings_fed_by(model, sources) -> set:
    """Names of the Embedding layers reached from the layers (or inputs) named in
    `sources` through layers that are not Embeddings."""
    import keras
    by_name = {layer.name: layer for layer in model.layers}
    frontier = [by_name[n] for n in sorted(sources) if n in by_name]
    seen, found = set(), set()
    while frontier:
        layer = frontier.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for node in layer._outbound_nodes:
            consumer = node.operation
            if isinstance(consumer, keras.layers.Embedding):
                found.add(consumer.name)
            elif isinstance(consumer, keras.layers.Layer):
                frontier.append(consumer)
    return found


def _lookup_name(artifacts, feature: str) -> str:
    from prepro.layers import default_layer_name
    entry = _entry(artifacts, feature)
    return entry["config"].get("name") or default_layer_name(feature, entry["layer"])


def _size(artifacts, feature: str) -> int:
    state = _entry(artifacts, feature)["state"]
    return state["token_start"] + state["vocabulary_size"]


def _entry(artifacts, feature: str):
    try:
        return artifacts.manifest["features"][feature]
    except KeyError:
        raise KeyError(f"no feature {feature!r} in {artifacts.root} (it has {artifacts.features})") from None


def _differ(a, b) -> str:
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


__all__ = ["remap_embedding", "remap_model_embeddings", "vocabulary_mapping"]
assert set(_LOOKUPS) <= set(spec_lib.LAYER_DEFAULTS)
