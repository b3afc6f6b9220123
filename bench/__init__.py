"""Benchmarks: prepro's analyze job against Keras adapt() and TensorFlow Transform."""
