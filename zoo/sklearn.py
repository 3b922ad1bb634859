"""scikit-learn integration: :class:`Featurizer`, a transformer that embeds inputs with any zoo model.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.linear_model import LogisticRegression
>>> clf = make_pipeline(Featurizer("minilm-l6"), LogisticRegression())
>>> clf.fit(texts, labels).predict(["new text"])
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from zoo.catalog._loader import load
from zoo.core._quantize import calibration_ranges, needs_calibration, quantize


class Featurizer(TransformerMixin, BaseEstimator):
    """Embed inputs (texts, images, audio...) with a frozen zoo model; ``fit`` learns nothing.

    Args:
        model: anything :func:`zoo.load` accepts.
        batch_size, normalize, pool, num_workers: as in :meth:`zoo.Model.featurize`.
        prompt, prompt_text, truncate_dim, precision, layer: the embedding options of
            :meth:`zoo.Model.featurize`. With ``precision="int8"`` or ``"uint8"``, ``fit`` learns
            the buckets from the training inputs (``ranges_``) and ``transform`` applies them, so
            train and test rows share one scale.
        device, dtype: as in :func:`zoo.load`.
        progress: show a progress bar.

    The model loads on first use and is not pickled with the estimator (each joblib worker loads
    its own), so the estimator clones, pickles and parallelises as scikit-learn expects.
    """

    def __init__(self, model: str = "minilm-l6", *, batch_size: int = 32, normalize: bool | None = None,
                 pool: str | None = None, prompt: str | None = None, prompt_text: str | None = None,
                 truncate_dim: int | None = None, precision: str = "float32", layer: int | None = None,
                 device: str | None = None, dtype: str | None = None, num_workers: int = 0,
                 progress: bool = False) -> None:
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.pool = pool
        self.prompt = prompt
        self.prompt_text = prompt_text
        self.truncate_dim = truncate_dim
        self.precision = precision
        self.layer = layer
        self.device = device
        self.dtype = dtype
        self.num_workers = num_workers
        self.progress = progress

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = needs_calibration(self.precision)  # otherwise a frozen model: nothing to learn
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def _loaded(self) -> Any:
        key = (self.model, self.device, self.dtype)
        cached = self.__dict__.get("_zoo_model")
        if cached is None or cached[0] != key:
            cached = (key, load(self.model, device=self.device, dtype=self.dtype))
            cached[1].require_dense("zoo.sklearn.Featurizer")
            self.__dict__["_zoo_model"] = cached
        return cached[1]

    def _options(self) -> Any:
        return self._loaded().embed_options(pool=self.pool, normalize=self.normalize, prompt=self.prompt,
                                            prompt_text=self.prompt_text,
                                            truncate_dim=self.truncate_dim, precision=self.precision, layer=self.layer)

    def _featurize(self, X: Any, options: Any) -> Any:
        return self._loaded().featurize(list(X), batch_size=self.batch_size, progress=self.progress,
                                        num_workers=self.num_workers, options=options)

    def fit(self, X: Any, y: Any = None) -> Featurizer:
        """Records the output width (``n_features_out_``); for int8 / uint8 output, learns each
        dimension's range from ``X`` (``ranges_``). Nothing else to learn."""
        options = self._options()
        if needs_calibration(self.precision):
            self.ranges_ = calibration_ranges(self._featurize(X, dataclasses.replace(options, precision="float32")))
        self.n_features_out_ = options.width
        return self

    def transform(self, X: Any) -> Any:
        """``(n_samples, n_features_out_)`` embeddings, rows in input order: float32, or the
        precision's integer type."""
        options = self._options()
        if not needs_calibration(self.precision):
            return self._featurize(X, options)
        check_is_fitted(self, "ranges_")
        return quantize(self._featurize(X, dataclasses.replace(options, precision="float32")), self.precision,
                        self.ranges_)

    def get_feature_names_out(self, input_features: Any = None) -> Any:
        import numpy as np

        prefix = str(self.model).replace(":", "_").replace("/", "_")
        return np.array([f"{prefix}_{i}" for i in range(self._options().width)], dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_zoo_model", None)
        return state
