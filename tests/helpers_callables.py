"""A custom TextVectorization `standardize` used by tests/test_artifacts.py.

Referenced from a spec as "tests.helpers_callables:my_standardize". It uses only
TensorFlow string ops, as Keras requires of a `standardize` callable.
"""

import tensorflow as tf


def my_standardize(text):
    """Lowercases (ASCII) and replaces HTML line breaks with a space."""
    text = tf.strings.lower(text)
    return tf.strings.regex_replace(text, "<br />", " ")
