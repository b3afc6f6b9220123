"""Stock Keras 3 layers built from artifacts: `prepro.load(path).layer(name)`.

A layer is built with the spec's constructor options plus its vocabulary. When the
vocabulary file holds every token, the layer reads the file itself (a
`TextFileInitializer`: nothing large embedded in a saved graph, and `.keras` files
carry it as an asset). Otherwise (see `prepro.vocab` on exceptions) the layer gets
the full list.
"""

from typing import Any, Dict, List, Mapping, Optional

from prepro import artifacts, fs, spec as spec_lib, vocab


class Artifacts:
    """Loaded, verified artifacts.

    Example:
    >>> arts = prepro.load("artifacts/")
    >>> layer = arts.layer("review")          # keras.layers.TextVectorization
    >>> layer(["the cat sat"])
    """

    def __init__(self, root: str, manifest: Dict[str, Any], custom_objects: Optional[Mapping[str, Any]] = None):
        self.root = root
        self.manifest = manifest
        self.custom_objects = dict(custom_objects or {})

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
        data = fs.read_bytes(fs.join(self.root, state["vocabulary_file"]))
        tokens = vocab.read_vocabulary_file(data, integer)
        tokens = vocab.merge_exceptions(tokens, [(r, vocab.token_from_json(t)) for r, t in state["exceptions"]])
        return tokens if integer else [t.decode("utf-8") for t in tokens]

    def layer(self, name: str, **overrides):
        """A new stock `keras.layers` object for feature `name`, ready to call.

        `overrides` change options that do not affect the learned state (for example
        `output_mode="multi_hot"` on a lookup whose vocabulary does not depend on it,
        or `name`); prepro refuses ones that would change which tokens were kept.
        """
        import keras
        entry = self._feature(name)
        config = {**entry["config"], **overrides}
        _check_overrides(entry, overrides, name)
        for key in ("standardize", "split"):
            if key in config and isinstance(config[key], str) and spec_lib._is_callable_ref(config[key]):
                config[key] = self._resolve(config[key], name)
        if isinstance(config.get("ngrams"), list):  # YAML/JSON lists; Keras wants a tuple
            config["ngrams"] = tuple(config["ngrams"])
        config.setdefault("name", name)
        state = entry["state"]
        if state["exceptions"]:
            config["vocabulary"] = self.vocabulary(name)
        else:
            config["vocabulary"] = fs.join(self.root, state["vocabulary_file"])
        return getattr(keras.layers, entry["layer"])(**config)

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
    """Opens an artifact directory (local or gs://), checking format and checksums."""
    return Artifacts(path, artifacts.read_manifest(path, verify=verify), custom_objects)
