"""Hook specifications: the contract between zoo and its plugins.

A plugin is a module (or object) with functions named like the hooks below, decorated with
:data:`zoo.hookimpl`. Built-in plugins live in :mod:`zoo.plugins`; third-party ones are found
through the ``zoo`` entry-point group::

    [project.entry-points.zoo]
    my_plugin = "my_package.zoo_plugin"

A hookimpl may accept any subset of a hook's arguments, by name. Registration hooks get a
``register`` callback instead of returning values (as ``llm`` does), so a bad registration fails
at the call that made it, with the plugin's name in the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence

    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.core._encoder import Encoder
    from zoo.core._model import Model
    from zoo.core._rows import RowFormat
    from zoo.store._model_files import ModelFiles
    from zoo.training._config import FinetuneConfig

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


class RegisterModality(Protocol):
    def __call__(
        self,
        name: str,
        *,
        decode: Callable[[Any], Any] | str,
        description: str = "",
        examples: Callable[[], list[Any]] | str | None = None,
        suffixes: Sequence[str] = (),
        media_types: Sequence[str] = (),
        over: str | None = None,
        tower: Callable[..., Encoder] | str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None: ...


class RegisterAdapter(Protocol):
    def __call__(
        self,
        backend: str,
        adapter: type[Encoder] | str,
        *,
        schemes: Sequence[str] = (),
    ) -> None: ...


class RegisterCommand(Protocol):
    def __call__(
        self,
        name: str,
        run: Callable[[argparse.Namespace], int | None],
        *,
        help: str = "",  # noqa: A002 (argparse's word for it)
    ) -> argparse.ArgumentParser: ...


class RegisterKind(Protocol):
    def __call__(
        self,
        name: str,
        *,
        description: str,
        verbs: Sequence[str],
        rows: RowFormat | str | None = None,
    ) -> None: ...


class RegisterModel(Protocol):
    def __call__(self, spec: ModelSpec | Mapping[str, Any]) -> None: ...


@hookspec
def zoo_register_kinds(register: RegisterKind) -> None:
    """Register model kinds: what a model gives, which verbs it answers, and how its rows are
    stored and searched.

    :param register:
        Call ``register(name, description=..., verbs=(...), rows=...)`` once per kind. ``name`` is
        what a spec's ``kind`` field says (``"sparse-encoder"``). ``description`` says what such a model
        does, as the words after "it": ``"embeds texts as sparse term weights"``; they are
        quoted when a verb of another kind is refused. ``verbs`` are those it answers, of
        ``featurize``, ``classify``, ``finetune``, ``score`` and ``rerank``; every other verb of
        :class:`zoo.Model` refuses its models by name. A kind that featurizes names ``rows``: a
        :class:`~zoo.core._rows.RowFormat` (or a ``"module:Class"`` string, imported only when a
        model of the kind featurizes), which says what featurize returns, how ``zoo embed`` writes
        the rows to parquet and how ``zoo index`` / ``zoo search`` search them; zoo keeps the rest
        (decoding, batching, skipped inputs, resumable chunks, ids, provenance and its guard,
        integrity checks).

    Called once, when the registry is first built, before models register (a model's ``kind``
    must be registered, or the model is left out and the failure recorded). zoo registers
    ``embedder`` (dense rows), ``reranker`` (scores of pairs) and ``multi-vector`` (token-vector
    matrices scored by MaxSim). A name registered twice is an error that names both plugins.
    """


@hookspec
def zoo_register_modalities(register: RegisterModality) -> None:
    """Register input modalities (``text``, ``vision``, ...) and how their inputs decode.

    :param register:
        Call ``register(name, decode=..., description=...)`` once per modality. ``decode`` takes one
        user input item and returns what the modality's adapters consume (a ``str``, an image, a
        waveform...), raising ``TypeError``, ``ValueError`` or ``OSError`` for a bad item; zoo turns
        that into an :class:`~zoo.errors.InputError` naming the item's index. It may be given as a
        ``"module:function"`` string so that it is imported only when first used. ``examples``
        (optional, also a callable or a string) returns a few valid inputs, at least eight, which
        the conformance kit (``zoo plugins check``) feeds to every model of the modality.
        ``suffixes`` (optional) are the file suffixes of the modality's media files, lower case with
        the dot (``(".wav", ".flac")``): ``zoo embed`` lists a folder's files of the model's
        modality by them, and refuses a file of another modality. ``media_types`` (optional) are the
        MIME types of its inputs as data URLs, fnmatch patterns (``("audio/*",)``): ``zoo serve``
        routes a ``data:audio/wav;base64,...`` item to the model's tower of this modality.
        ``over`` and ``tower`` (optional, together) make it a modality that models of another one
        embed: every loaded model with a tower of modality ``over`` gets a tower of this one,
        ``tower(encoder, **settings)`` (an :class:`~zoo.Encoder`, or a ``"module:Class"`` string),
        wrapping that tower's encoder (``video`` over ``vision``: a clip's sampled frames through the
        image tower, their rows averaged). ``settings`` (optional) say how that tower reads an input
        (frames per clip, how they are sampled, how their rows pool); they are recorded in the
        provenance of every row it gives, and those ``decode`` takes as keyword arguments are bound
        to it (a clip's ``frames``). A model with a tower of this modality of its own (an HF video
        model) reads inputs as its adapter declares in its spec's ``preprocessing[name]`` (the
        frame count the model was built for), bound and recorded the same way.

    Called once, when the registry is first built. A name registered twice is an error that names
    both plugins.
    """


@hookspec
def zoo_register_adapters(register: RegisterAdapter) -> None:
    """Register backend adapters: the classes that load and run one backend library's models.

    :param register:
        Call ``register(backend, adapter, schemes=(...))``. ``adapter`` is a subclass of
        :class:`zoo.Encoder` or a ``"module:Class"`` string, imported only when a model of that
        backend is loaded (so ``zoo list`` never imports torch). ``schemes`` are the pass-through
        prefixes it serves: with ``schemes=("hf",)``, ``zoo.load("hf:org/name@rev")`` builds a spec
        with :meth:`Encoder.spec_for_id`.

    Called once, when the registry is first built. A backend or scheme registered twice is an
    error that names both plugins.
    """


@hookspec
def zoo_register_models(register: RegisterModel) -> None:
    """Register models, in addition to those of ``registry.yaml``.

    :param register:
        Call ``register(spec)`` with a :class:`~zoo.catalog._spec.ModelSpec` or a mapping of its fields (the
        same fields as a ``registry.yaml`` entry). Unknown fields raise
        :class:`~zoo.errors.RegistryError` with a "did you mean".

    Called once, when the registry is first built. A name or alias already registered (by
    ``registry.yaml`` or another plugin) raises :class:`~zoo.errors.DuplicateModelError` naming
    both plugins; the rest of the plugin's models still register.
    """


@hookspec
def zoo_register_commands(register: RegisterCommand) -> None:
    """Add subcommands to the ``zoo`` command line, as zoo's own verbs are added.

    :param register:
        Call ``register(name, run, help=...)`` once per command. It returns the command's
        ``argparse.ArgumentParser``, to which the plugin adds its arguments; ``run(args)`` gets the
        parsed ``argparse.Namespace`` and returns the exit code (``None`` means 0). A
        :class:`~zoo.errors.ZooError`, ``OSError`` or ``ValueError`` it raises is printed as one
        ``zoo: error:`` line with exit code 1.

    Called each time the command line is built. A name registered twice is an error naming both
    plugins; a third-party plugin's failure is recorded (``zoo plugins``) and its other commands
    still register.
    """


@hookspec(firstresult=True)
def zoo_spec_from_path(path: Path, kind: str | None) -> ModelSpec | None:
    """Recognise a model saved in a local folder (or file) and describe it.

    :param path: an existing local path passed to :func:`zoo.load`.
    :param kind: the kind of model the caller asked for (``zoo.load(path, kind="reranker")``; see
        :func:`zoo_register_kinds`), or None. A folder whose files do not say its kind (a
        transformers sequence classifier may be a reranker or a classifier) is read as this kind;
        one whose files say another kind is an :class:`~zoo.errors.UnsupportedModelKindError`.
    :return: a spec whose sources point at ``path``, or ``None`` if this plugin does not recognise
        the format.

    firstresult: stops at the first non-``None`` result. Called by :func:`zoo.load` for paths.
    """


@hookspec(firstresult=True)
def zoo_resolve_source(spec: ModelSpec, cache_dir: Path, network: bool) -> ModelFiles | Path | None:
    """Provide a folder holding ``spec``'s files, for example from a company mirror.

    :param spec: the model to provide.
    :param cache_dir: zoo's cache root (``ZOO_HOME``), where downloads may be stored.
    :param network: ``False`` in offline mode: the implementation must not open a socket.
    :return: the folder (its files are then checked against ``spec.sha256`` by zoo, so a mirror
        cannot bypass integrity checks), or ``None`` to let the next implementation try.

    firstresult: stops at the first non-``None`` result. zoo's own implementation runs last and
    tries ``spec.sources`` in order, local ones first.
    """


@hookspec(firstresult=True)
def zoo_load_pretrained(
    spec: ModelSpec,
    files: ModelFiles,
    adapter_class: type[Encoder],
    requires: Mapping[str, Model],
    device: str,
    dtype: str | torch.dtype | None,
    options: dict[str, Any],
) -> Encoder | Model | None:
    """Build the loaded model for ``spec`` from its verified files.

    Everything is resolved before this hook runs, once per load: the spec, its files, the encoder
    class and the models it requires.

    :param spec: the resolved spec (refined by :meth:`Encoder.resolve_files`, e.g. with the modality
        a downloaded ``config.json`` names).
    :param files: the verified local files (``files.root`` is the model folder).
    :param adapter_class: the :class:`zoo.Encoder` subclass that serves ``spec``: the one registered
        for ``spec.backend``, or the class its :meth:`Encoder.resolve_files` picked for these files.
    :param requires: the models named in ``spec.requires``, already loaded, by name (a finetuned
        model's base).
    :param device: torch device string, e.g. ``"cpu"`` or ``"cuda:0"``.
    :param dtype: compute dtype: a name (``"float32"``, ``"bf16"``...), a ``torch.dtype``, or
        ``None`` for float32.
    :param options: further keyword arguments given to :func:`zoo.load`, such as
        ``trust_remote_code`` (which zoo never turns on by itself).
    :return: a ready :class:`zoo.Encoder` (the loader wraps it in a :class:`zoo.Model`, binding
        each tower's decoder), a :class:`zoo.Model` built on a required one (a finetuned model is
        its base's encoder with a head), or ``None`` to let the next implementation try.

    firstresult: stops at the first non-``None`` result. zoo's own implementation runs last and
    calls ``adapter_class.load_pretrained``.
    """


@hookspec(firstresult=True)
def zoo_finetune(model: Model, train: Any, val: Any, config: FinetuneConfig) -> Any:
    """Train a classifier on ``model`` and save it so that ``zoo.load(config.output_dir)`` reads it back.

    :param model: the loaded pretrained model (its weights must not change: train a copy).
    :param train: training data as :meth:`zoo.Model.finetune` accepts it.
    :param val: validation data in the same forms, or ``None``.
    :param config: the run's settings.
    :return: a result with ``history``, ``best_epoch``, ``best_checkpoint`` and ``model``
        (:class:`zoo.training.FinetuneResult`), or ``None`` to let the next implementation try.

    firstresult: stops at the first non-``None`` result. zoo's built-in :mod:`zoo.training` plugin
    implements it; a plugin may take over (another trainer, another hardware backend).
    """
