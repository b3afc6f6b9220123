"""The Keras preprocessing-layers guide's `adapt()` recipes, with prepro artifacts instead.

    python examples/keras_guide.py [WORKDIR]

Each recipe writes the guide's data to a file, runs prepro's Beam job on it, builds the
layer from the artifacts and runs the guide's own code with it; then it adapts the
guide's layer as the guide does and checks both give the same outputs. (The guide loads
CIFAR-10; with no download here, the numeric recipe uses random images of its shape.)
tests/test_guide_examples.py runs every recipe.
"""

import json
import os
import sys
import tempfile

import numpy as np


def analyze(workdir: str, features: dict, rows: list) -> "prepro.Artifacts":
    """The replacement for `layer.adapt(data)`: data in a file, the job, the artifacts."""
    import prepro
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    os.makedirs(workdir, exist_ok=True)
    data = os.path.join(workdir, "data.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    out = os.path.join(workdir, "artifacts")
    run_analyze(spec_from_dict({"features": features}), [data], "jsonl", out)
    return prepro.load(out)


def normalizing_numerical_features(workdir):
    import keras
    from keras import layers
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)   # CIFAR-10's shape
    y_train = rng.integers(0, 10, (2000, 1))
    x_train = x_train.reshape((len(x_train), -1))
    input_shape = x_train.shape[1:]
    classes = 10
    arts = analyze(workdir, {"pixels": {"source": "pixels", "layer": "Normalization", "shape": [3072]}},
                   [{"pixels": row.tolist()} for row in x_train])
    normalizer = arts.layer("pixels")                     # instead of normalizer.adapt(x_train)
    inputs = keras.Input(shape=input_shape)
    x = normalizer(inputs)
    outputs = layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, verbose=0)
    adapted = layers.Normalization()
    adapted.adapt(x_train)
    return normalizer(x_train), adapted(x_train)


def string_categorical_one_hot(workdir):
    import tensorflow as tf
    from keras import layers
    data = ["a", "b", "c", "b", "c", "a"]
    arts = analyze(workdir, {"f": {"source": "f", "layer": "StringLookup", "config": {"output_mode": "one_hot"}}},
                   [{"f": v} for v in data])
    lookup = arts.layer("f")
    test_data = tf.constant([["a"], ["b"], ["c"], ["d"], ["e"], [""]])
    adapted = layers.StringLookup(output_mode="one_hot")
    adapted.adapt(tf.constant([[v] for v in data]))
    return lookup(test_data), adapted(test_data)


def integer_categorical_one_hot(workdir):
    import tensorflow as tf
    from keras import layers
    data = [10, 20, 20, 10, 30, 0]
    arts = analyze(workdir, {"f": {"source": "f", "layer": "IntegerLookup", "config": {"output_mode": "one_hot"}}},
                   [{"f": v} for v in data])
    lookup = arts.layer("f")
    test_data = tf.constant([[10], [10], [20], [50], [60], [0]])
    adapted = layers.IntegerLookup(output_mode="one_hot")
    adapted.adapt(tf.constant([[v] for v in data]))
    return lookup(test_data), adapted(test_data)


def hashing_trick(workdir):
    """No adapt() in the guide; the artifact records the layer, so one place builds it.
    Keras 3's Hashing encodes multi-hot itself: the guide's Hashing + CategoryEncoding."""
    from keras import layers
    data = np.random.default_rng(1).integers(0, 100000, size=(10000, 1))
    arts = analyze(workdir, {"ids": {"source": "ids", "layer": "Hashing",
                                     "config": {"num_bins": 64, "salt": 1337, "output_mode": "multi_hot"}}},
                   [{"ids": int(v)} for v in data[:, 0]])
    hasher = layers.Hashing(num_bins=64, salt=1337)
    encoder = layers.CategoryEncoding(num_tokens=64, output_mode="multi_hot")
    return arts.layer("ids")(data), encoder(hasher(data))


ADAPT_DATA = ["The Brain is wider than the Sky", "For put them side by side",
              "The one the other will contain", "With ease and You beside"]


def _text_recipe(workdir, config, train_and_export):
    from keras import layers
    arts = analyze(workdir, {"text": {"source": "text", "layer": "TextVectorization", "config": config}},
                   [{"text": t} for t in ADAPT_DATA])
    adapted = layers.TextVectorization(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    adapted.adapt(ADAPT_DATA)
    return train_and_export(arts.layer("text")), train_and_export(adapted)


def _train_and_call(text_vectorizer, model, string_shape):
    """The guide's text recipe after adapt(): train `model` on vectorized strings, then
    an end-to-end model on strings; returns the encoded test string and its output."""
    import tensorflow as tf
    import keras
    train_dataset = tf.data.Dataset.from_tensor_slices(
        (["The Brain is deeper than the sea", "for if they are held Blue to Blue"], [1, 0]))
    train_dataset = train_dataset.batch(2).map(lambda x, y: (text_vectorizer(x), y))
    model.compile(optimizer="rmsprop", loss="mse")
    model.fit(train_dataset, verbose=0, shuffle=False)
    inputs = keras.Input(shape=string_shape, dtype="string")
    end_to_end_model = keras.Model(inputs, model(text_vectorizer(inputs)))
    test = tf.constant(["The one the other will absorb"]) if string_shape == () else \
        tf.constant([["The one the other will absorb"]])
    encoded = text_vectorizer(["The Brain is deeper than the sea"])
    return np.concatenate([np.asarray(encoded, np.float32).reshape(-1),
                           np.asarray(end_to_end_model(test)).reshape(-1)])


def text_as_token_indices(workdir):
    import keras
    from keras import layers

    def guide(text_vectorizer):
        keras.utils.set_random_seed(0)   # the same model weights for both vectorizers
        inputs = keras.Input(shape=(None,), dtype="int64")
        x = layers.Embedding(input_dim=text_vectorizer.vocabulary_size(), output_dim=16)(inputs)
        x = layers.GRU(8)(x)
        return _train_and_call(text_vectorizer, keras.Model(inputs, layers.Dense(1)(x)), (1,))
    return _text_recipe(workdir, {"output_mode": "int"}, guide)


def _dense_text_guide(text_vectorizer):
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(text_vectorizer.vocabulary_size(),))
    # The guide's keras.Input(shape=(1,), dtype="string") fails here on Keras 3.15 (the
    # symbolic multi_hot/tf_idf output is (None, 1, vocabulary)); shape=() works.
    return _train_and_call(text_vectorizer, keras.Model(inputs, layers.Dense(1)(inputs)), ())


def text_multi_hot_bigrams(workdir):
    return _text_recipe(workdir, {"output_mode": "multi_hot", "ngrams": 2}, _dense_text_guide)


def text_tf_idf_bigrams(workdir):
    return _text_recipe(workdir, {"output_mode": "tf_idf", "ngrams": 2}, _dense_text_guide)


RECIPES = [normalizing_numerical_features, string_categorical_one_hot, integer_categorical_one_hot,
           hashing_trick, text_as_token_indices, text_multi_hot_bigrams, text_tf_idf_bigrams]


def main(workdir=None) -> int:
    workdir = workdir or tempfile.mkdtemp(prefix="prepro-guide-")
    failed = 0
    for recipe in RECIPES:
        ours, theirs = (np.asarray(x) for x in recipe(os.path.join(workdir, recipe.__name__)))
        same = ours.shape == theirs.shape and np.array_equal(ours, theirs)
        failed += not same
        print(f"{recipe.__name__:<34} {'same outputs as adapt()' if same else 'DIFFERENT from adapt()'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
