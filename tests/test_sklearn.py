"""zoo.sklearn.Featurizer is a real scikit-learn transformer, for any modality."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from zoo.sklearn import Featurizer

TEXTS = ["I love this film", "what a wonderful day", "great food and friends", "a lovely warm evening",
         "brilliant acting", "this is terrible", "an awful, boring wait", "I hate the rain",
         "the worst service ever", "a dreadful plot"] * 2
LABELS = ([1] * 5 + [0] * 5) * 2


def test_params_clone_and_pickle():
    f = Featurizer("minilm-l6", batch_size=8)
    assert f.get_params()["batch_size"] == 8 and f.get_params()["model"] == "minilm-l6"
    f.set_params(batch_size=4, normalize=False)
    twin = clone(f)
    assert twin.get_params() == f.get_params() and twin is not f
    f.fit(TEXTS)
    restored = pickle.loads(pickle.dumps(f))  # the loaded model is not pickled
    assert "_zoo_model" not in restored.__dict__ and restored.n_features_out_ == 384


def test_transform_equals_featurize_and_fit_is_a_no_op(minilm):
    f = Featurizer("minilm-l6")
    X = f.fit_transform(TEXTS)
    np.testing.assert_array_equal(X, minilm.featurize(TEXTS))
    # no fit needed; a batch of 3 pads and rounds differently from one of 20: equal to float tolerance
    np.testing.assert_allclose(Featurizer("minilm-l6").transform(TEXTS[:3]), X[:3], atol=1e-6)
    assert len(f.get_feature_names_out()) == 384


@pytest.mark.slow
def test_in_a_pipeline_with_cross_validation():
    pipeline = make_pipeline(Featurizer("minilm-l6"), LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipeline, TEXTS, LABELS, cv=2)
    assert scores.mean() >= 0.8


@pytest.mark.slow  # the fast tier keeps under two minutes
def test_any_modality_images_in_a_pipeline():
    skimage_data = pytest.importorskip("skimage.data")
    images = [(x * 255).astype(np.uint8) for x in skimage_data.lfw_subset()]
    picks = list(range(0, 200, 5))
    X = [images[i] for i in picks]
    y = [int(i < 100) for i in picks]
    pipeline = make_pipeline(Featurizer("efficientnet-lite0"), LogisticRegression(max_iter=1000))
    assert cross_val_score(pipeline, X, y, cv=2).mean() >= 0.85
