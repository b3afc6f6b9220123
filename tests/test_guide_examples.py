"""The Keras guide's adapt() recipes run with prepro artifacts (examples/keras_guide.py):
each recipe's outputs with the artifact-built layer equal those with the adapted one."""

import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "keras_guide.py")
_spec = importlib.util.spec_from_file_location("keras_guide", _PATH)
guide = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guide)


@pytest.mark.parametrize("recipe", guide.RECIPES, ids=lambda r: r.__name__)
def test_guide_recipe_with_artifacts_equals_adapt(recipe, tmp_path):
    ours, theirs = (np.asarray(x) for x in recipe(str(tmp_path)))
    assert ours.shape == theirs.shape and ours.size > 0
    np.testing.assert_array_equal(ours, theirs)
