"""The conformance kit: run the adapter contract over models, from ``zoo plugins check`` or pytest.

For every model it can load offline, it checks: loading; preprocessing present; featurize shape,
dtype, width, row order, determinism, empty input, a bad item named by its index; for each
finetuning strategy the adapter claims, one short training run whose checkpoint ``zoo.load`` reads
back with the same predictions. A reranker is checked by its own verbs instead: scores of pairs
(shape, dtype, order, independence of the batch, determinism, empty input, a bad pair named), a
ranking sorted by them, and featurize refused by name. In a plugin's own tests::

    from zoo.testing import assert_conformance

    def test_my_plugin_conforms(tmp_path):
        assert_conformance("my-zoo-plugin", workdir=tmp_path)
"""

from __future__ import annotations

import itertools
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._loader import load, locate_files, resolve
from zoo.catalog._registry import get_registry
from zoo.catalog._spec import ModelSpec
from zoo.core._model import Model
from zoo.core._rows import DenseRows
from zoo.embeddings._embed import embed_to_file
from zoo.embeddings._embedding_file import embedding_batches
from zoo.embeddings._inputs import items_source
from zoo.search import build, open_index

from .errors import InputError, OfflineError, SourceError, UnknownModelError, UnsupportedModelKindError, ZooError

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Check:
    """The outcome of one check on one model."""

    model: str
    check: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""
    seconds: float = 0.0


class _Recorder:
    def __init__(self, model: str) -> None:
        self.model = model
        self.results: list[Check] = []

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        except _Skip as skip:
            self.results.append(Check(self.model, name, "skip", str(skip), time.perf_counter() - began))
        except Exception as exc:  # a failing check is a result, not a crash of the kit
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if not isinstance(exc, (AssertionError, ZooError)):
                detail += f" [{traceback.extract_tb(exc.__traceback__)[-1].name}]"
            self.results.append(Check(self.model, name, "fail", detail, time.perf_counter() - began))
        else:
            self.results.append(Check(self.model, name, "pass", "", time.perf_counter() - began))


class _Skip(Exception):
    pass


def _close(a: Any, b: Any, atol: float) -> bool:
    """Two dense arrays of one shape within ``atol`` (dense rows' own comparison)."""
    return DenseRows().max_difference(a, b) <= atol


def check_model(name: str, *, workdir: str | Path | None = None, strategies: tuple[str, ...] | None = None,
                examples: list[Any] | None = None) -> list[Check]:
    """Run the adapter contract on one model; never raises for a failing check."""
    rec = _Recorder(name)
    spec = _check_loadable(rec, name)
    model = None
    if spec is not None:
        with rec.check("load"):
            model = load(name, device="cpu")
            assert model.spec.modality == spec.modality, f"modality {model.spec.modality!r} != spec {spec.modality!r}"
    if model is None or spec is None:  # spec is None only when model is
        return rec.results
    with rec.check("preprocessing present"):
        assert model.preprocess is not None, "model.preprocess is None"
    inputs = examples if examples is not None else get_registry().modality(model.tower()[0]).examples()
    verbs = get_registry().kind(model.kind).verbs
    if "score" in verbs:
        _check_scores(rec, model, inputs)
        return rec.results
    X = _check_featurize(rec, model, spec, inputs)
    for tower in model.towers:  # towers a modality adds over another (video over vision)
        if get_registry().modality(tower).over is not None:
            _check_derived_tower(rec, model, tower)
    if X is not None and "finetune" in verbs:
        claimed = strategies if strategies is not None else model.encoder.strategies
        _check_finetune(rec, model, inputs, X, claimed, workdir)
    if X is not None and not isinstance(model.row_format, DenseRows):
        _check_stored(rec, model, inputs, X, workdir)
    return rec.results


def _check_loadable(rec: _Recorder, name: str) -> ModelSpec | None:
    """The spec, if the model's files are on this machine (a model that is not is skipped)."""
    with rec.check("resolve offline"):
        spec = resolve(name)
        try:
            locate_files(spec, network=False)
        except (OfflineError, SourceError) as exc:
            raise _Skip(f"not on this machine: {str(exc).splitlines()[0][:160]}") from None
    return spec if rec.results[-1].status == "pass" else None


def _check_featurize(rec: _Recorder, model: Model, spec: ModelSpec, inputs: list[Any]) -> Any:
    """Shape, dtype, width, row order, determinism, empty input and a bad item; returns the rows
    (compared through the row format of the model's kind, so a plugin's rows are checked alike)."""
    import numpy as np

    rows, dense = model.row_format, isinstance(model.row_format, DenseRows)
    X = None
    with rec.check("featurize shape and dtype"):
        if len(inputs) < 4:
            raise _Skip(f"modality {model.modality!r} registers no examples")
        X = model.featurize(inputs, batch_size=3)
        assert rows.count(X) == len(inputs), f"{rows.count(X)} rows for {len(inputs)} inputs"
        if dense:
            assert X.dtype == np.float32, f"dtype {X.dtype}"
            assert X.shape == (len(inputs), model.embed_dim), f"shape {X.shape}, embed_dim {model.embed_dim}"
        if spec.embed_dim is not None:
            assert model.embed_dim == spec.embed_dim, f"embed_dim {model.embed_dim} != registry {spec.embed_dim}"
        assert rows.finite(X).all(), "non-finite values"
    if X is not None:
        with rec.check("input order kept"):
            Y = model.featurize(inputs[::-1], batch_size=2)
            back = rows.take(Y, range(len(inputs) - 1, -1, -1))
            assert rows.max_difference(back, X) <= 1e-4, "rows do not follow the inputs when their order changes"
        with rec.check("deterministic"):
            assert rows.max_difference(model.featurize(inputs, batch_size=3), X) <= 1e-5, "two calls differ"
    with rec.check("empty input"):
        empty = model.featurize([])
        assert rows.count(empty) == 0, "rows for no input"
        if dense:
            assert empty.shape == (0, model.embed_dim) and empty.dtype == np.float32, f"got {empty.shape} {empty.dtype}"
    with rec.check("bad item named"):
        probe = [*inputs[:1], object()]
        try:
            model.featurize(probe)
        except InputError as exc:
            assert exc.index == len(probe) - 1, f"named index {exc.index}, expected {len(probe) - 1}"
        else:
            raise AssertionError("an object() input was accepted")
    return X


def _check_derived_tower(rec: _Recorder, model: Model, tower: str) -> None:
    """A tower another modality's plugin adds over one of the model's: its examples embed to one
    finite row each, whatever their order and batch."""
    import numpy as np

    with rec.check(f"{tower} tower"):
        inputs = get_registry().modality(tower).examples()
        if len(inputs) < 4:
            raise _Skip(f"modality {tower!r} registers no examples")
        X = model.featurize(inputs, tower=tower, batch_size=3)
        assert X.shape == (len(inputs), model.embed_dim) and np.isfinite(X).all(), f"rows of shape {X.shape}"
        back = model.featurize(inputs[::-1], tower=tower, batch_size=2)[::-1]
        assert np.abs(back - X).max() <= 1e-4, "rows do not follow the inputs when their order or batch changes"


def _check_stored(rec: _Recorder, model: Model, inputs: list[Any], X: Any, workdir: str | Path | None) -> None:
    """A plugin's row format end to end: ``zoo embed`` writes the rows and reads them back as
    featurize gave them, ``zoo index`` builds its store, reopened with its checks, and a search
    returns every row once, best first."""
    rows, role = model.row_format, model.search_role("document")
    with rec.check("embed, index and search"), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if role is not None:  # zoo embed embeds a corpus: as documents, where the model runs roles apart
            X = model.featurize(inputs, batch_size=3, role=role)
        out = Path(tmp) / "rows.parquet"
        embed_to_file(model, items_source(inputs, "the conformance examples", media=model.tower()[0] != "text"), out,
                      batch_size=3, progress=False)
        (batch,) = embedding_batches(out)
        assert rows.max_difference(batch.rows, X) <= 1e-5, "the rows zoo embed wrote read back otherwise"
        index = open_index(build(out, Path(tmp) / "index").path)
        (hits,) = index.search_vectors(rows.take(X, [0]), k=len(inputs))
        assert sorted(h.id for h in hits) == sorted(str(i) for i in range(len(inputs))), "search lost or repeated rows"
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits)), "search hits are not best first"


def _check_scores(rec: _Recorder, model: Model, inputs: list[Any]) -> None:
    """A reranker's contract: ``score`` of pairs built from the modality's examples (shape, dtype,
    order, batch independence, determinism, empty input, a bad pair), ``rerank`` sorted by those
    scores, and the embedding verbs refused by name."""
    import numpy as np

    pairs = [(inputs[i], inputs[(i + 1) % len(inputs)]) for i in range(len(inputs))]
    scores = None
    with rec.check("score shape and dtype"):
        if len(inputs) < 4:
            raise _Skip(f"modality {model.modality!r} registers no examples")
        scores = model.score(pairs, batch_size=3)
        assert scores.dtype == np.float32 and scores.shape[0] == len(pairs), f"got {scores.shape} {scores.dtype}"
        assert np.isfinite(scores).all(), "non-finite scores"
    if scores is not None:
        with rec.check("pair order kept, whatever the batch"):
            assert _close(model.score(pairs[::-1], batch_size=2)[::-1], scores, 1e-5), "scores do not follow the pairs"
            alone = np.concatenate([model.score([pair]) for pair in pairs])
            assert _close(alone, scores, 1e-5), "a score depends on its batch"
        with rec.check("rerank sorted by score"):
            ranked = model.rerank(inputs[0], inputs, batch_size=3)
            assert sorted(r.index for r in ranked) == list(range(len(inputs))), "rerank lost or repeated documents"
            assert all(a.score >= b.score for a, b in itertools.pairwise(ranked)), "rerank is not best first"
    with rec.check("empty input"):
        assert model.score([]).shape[0] == 0 and model.rerank(inputs[0], []) == [], "empty input gave results"
    with rec.check("bad pair named"):
        try:
            model.score([pairs[0], (inputs[0], object())])
        except InputError as exc:
            assert exc.index == 1, f"named index {exc.index}, expected 1"
        else:
            raise AssertionError("an object() document was accepted")
    with rec.check("embedding verbs refused"):
        try:
            model.featurize(inputs[:1])
        except UnsupportedModelKindError:
            pass
        else:
            raise AssertionError("featurize gave rows from a reranker")


def _check_finetune(rec: _Recorder, model: Model, inputs: list[Any], X: np.ndarray, claimed: tuple[str, ...],
                    workdir: str | Path | None) -> None:
    """For each strategy the adapter claims: one short run that zoo.load reads back with the same
    predictions; then the pretrained weights must be untouched."""
    import numpy as np

    labels = ["a", "b"] * (len(inputs) // 2) + ["a"] * (len(inputs) % 2)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for strategy in claimed:
            with rec.check(f"finetune {strategy} + zoo.load"):
                out = Path(tmp) / strategy
                result = model.finetune((inputs, labels), strategy=strategy, epochs=1, batch_size=4,
                                        output_dir=out, progress=False, unfreeze_blocks=1)
                losses = [h["train_loss"] for h in result.history]
                assert all(np.isfinite(losses)), f"losses {losses}"
                if strategy in ("full", "partial"):  # freeze-unfreeze's one epoch is frozen
                    assert _backbone_changed(model, result.model), (
                        f"{strategy} trained no weight of the backbone: blocks() names no module of the model "
                        "(see docs/plugins.md, 'blocks')")
                again = load(out, device="cpu")
                assert _close(again.predict_proba(inputs), result.model.predict_proba(inputs), 1e-4), \
                    "zoo.load(output_dir) predicts differently from the trained model"
        with rec.check("pretrained weights untouched by finetune"):
            assert _close(model.featurize(inputs, batch_size=3), X, 1e-5), "featurize changed after finetune"


def _backbone_changed(before: Model, after: Model) -> bool:
    import torch

    trained = after.model.state_dict()
    return any(not torch.equal(value, trained[name]) for name, value in before.model.state_dict().items()
               if value.is_floating_point())


def check(target: str, *, workdir: str | Path | None = None,
          progress: Callable[[str], None] | None = None) -> list[Check]:
    """Check every model of a plugin, or one model when ``target`` is a model name."""
    registry = get_registry()
    names = registry.models_of(target)
    if not names:
        if registry.get(target) is None and ":" not in target and not Path(target).exists():
            plugins = sorted({str(owner) for owner in registry.owners.values()})
            failed = "".join(f"; {failure}" for failure in registry.failures)
            raise UnknownModelError(target, hint=f"(neither a plugin with models nor a model; plugins: "
                                                 f"{', '.join(plugins)}{failed})")
        names = [target]
    results: list[Check] = []
    for name in names:
        if progress:
            progress(name)
        results += check_model(name, workdir=workdir)
    return results


def format_table(results: list[Check]) -> str:
    """A plain-text table of results with a summary line."""
    rows = [[r.model, r.check, r.status.upper(), f"{r.seconds:.1f}s", r.detail] for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(["model", "check", "status", "time", "detail"], *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(["model", "check", "status", "time", "detail"], widths)).rstrip()]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    lines.append(f"{counts['pass']} checks passed, {counts['fail']} failed, {counts['skip']} skipped")
    return "\n".join(lines)


def assert_conformance(target: str, *, workdir: str | Path | None = None) -> list[Check]:
    """For pytest: check ``target`` (a plugin or a model) and fail with the table if anything failed."""
    results = check(target, workdir=workdir)
    if any(r.status == "fail" for r in results) or not any(r.status == "pass" for r in results):
        raise AssertionError("zoo conformance failed:\n" + format_table(results))
    return results
