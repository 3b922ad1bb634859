"""scikit-learn integration: :class:`Featurizer`, a transformer that embeds inputs with any zoo model.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.linear_model import LogisticRegression
>>> clf = make_pipeline(Featurizer("minilm-l6"), LogisticRegression())
>>> clf.fit(texts, labels).predict(["new text"])
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin

from .loader import load


class Featurizer(TransformerMixin, BaseEstimator):
    """Embed inputs (texts, images, audio...) with a frozen zoo model; ``fit`` learns nothing.

    Args:
        model: anything :func:`zoo.load` accepts.
        batch_size, normalize, pool, num_workers: as in :meth:`zoo.Adapter.featurize`.
        device, dtype: as in :func:`zoo.load`.
        progress: show a progress bar.

    The model loads on first use and is not pickled with the estimator (each joblib worker loads
    its own), so the estimator clones, pickles and parallelises as scikit-learn expects.
    """

    def __init__(self, model: str = "minilm-l6", *, batch_size: int = 32, normalize: bool | None = None,
                 pool: str | None = None, device: str | None = None, dtype: str | None = None,
                 num_workers: int = 0, progress: bool = False) -> None:
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.pool = pool
        self.device = device
        self.dtype = dtype
        self.num_workers = num_workers
        self.progress = progress

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # a frozen model: nothing to learn
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def _loaded(self) -> Any:
        key = (self.model, self.device, self.dtype)
        cached = self.__dict__.get("_zoo_model")
        if cached is None or cached[0] != key:
            cached = (key, load(self.model, device=self.device, dtype=self.dtype))
            self.__dict__["_zoo_model"] = cached
        return cached[1]

    def fit(self, X: Any, y: Any = None) -> Featurizer:
        """Nothing to learn; records the output width (``n_features_out_``)."""
        self.n_features_out_ = self._loaded().embed_dim
        return self

    def transform(self, X: Any) -> Any:
        """``(n_samples, embed_dim)`` float32 embeddings, rows in input order."""
        return self._loaded().featurize(list(X), batch_size=self.batch_size, normalize=self.normalize,
                                        pool=self.pool, progress=self.progress, num_workers=self.num_workers)

    def get_feature_names_out(self, input_features: Any = None) -> Any:
        import numpy as np

        prefix = str(self.model).replace(":", "_").replace("/", "_")
        return np.array([f"{prefix}_{i}" for i in range(self._loaded().embed_dim)], dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_zoo_model", None)
        return state
