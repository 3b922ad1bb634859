"""Plugin discovery through real entry points, failure isolation, the allow-list and clashes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
import sys

import pytest

import zoo
from plugin_fixtures import install_plugin
from zoo import hookspecs
from zoo.errors import DuplicateModelError, UnknownModelError
from zoo.catalog._plugin_manager import build_plugin_manager, get_plugin_manager, reset_plugin_manager
from zoo.catalog._registry import build_registry, get_registry

GOOD = """
    from zoo import hookimpl

    @hookimpl
    def zoo_register_models(register):
        register({"name": "tiny-text", "modality": "text", "backend": "transformers",
                  "sources": [{"path": "/nowhere"}], "embed_dim": 32, "aliases": ["tt"]})
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith("zoo_test_")]:
        del sys.modules[name]


def failures_text() -> str:
    return "\n".join(str(f) for f in get_registry().failures)


def test_hook_register_models_from_an_entry_point_plugin(site):
    install_plugin(site, "zoo-test-good", "zoo_test_good", GOOD, version="2.3")
    reset_plugin_manager()
    assert "tiny-text" in zoo.list_models("tiny*")
    spec = zoo.resolve("TT")
    assert spec.name == "tiny-text" and spec.plugin == "zoo-test-good (zoo_test_good)"
    infos = {i.name: i for i in get_plugin_manager().infos()}
    assert infos["zoo_test_good"].version == "2.3" and not infos["zoo_test_good"].builtin


def test_plugin_that_raises_on_import_is_reported_and_the_zoo_still_works(site, minilm):
    install_plugin(site, "zoo-test-broken", "zoo_test_broken", "raise ImportError('needs libfoo')")
    install_plugin(site, "zoo-test-good", "zoo_test_good", GOOD)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning, match="zoo-test-broken"):
        names = zoo.list_models()
    assert {"minilm-l6", "tiny-text"} <= set(names)
    assert "zoo-test-broken (zoo_test_broken) failed to import: ImportError: needs libfoo" in failures_text()
    assert zoo.load("minilm-l6").featurize(["still works"]).shape == (1, 384)


def test_duplicate_model_name_names_both_plugins_and_keeps_the_rest(site):
    install_plugin(site, "zoo-test-clash", "zoo_test_clash", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_models(register):
            register({"name": "minilm-l6", "modality": "text", "backend": "transformers"})
            register({"name": "clash-ok", "modality": "text", "backend": "transformers"})
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning, match="already registered"):
        names = zoo.list_models()
    assert "clash-ok" in names and zoo.resolve("minilm-l6").plugin == "zoo (registry.yaml)"
    text = failures_text()
    assert "'minilm-l6' registered by zoo-test-clash (zoo_test_clash)" in text
    assert "already registered by zoo (registry.yaml)" in text


def test_duplicate_between_builtins_is_an_error():
    class Twice:
        @zoo.hookimpl
        def zoo_register_models(self, register):
            register({"name": "minilm-l6", "modality": "text", "backend": "transformers"})

    pm = build_plugin_manager(entry_points=False)
    pm.register(Twice(), name="twice")
    pm.builtin_names.add("twice")
    with pytest.raises(DuplicateModelError, match="'minilm-l6' registered by twice is already registered by zoo"):
        build_registry(pm)


def test_misspelled_hook_fails_loudly_naming_the_plugin(site):
    install_plugin(site, "zoo-test-typo", "zoo_test_typo", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_model(register):
            register({"name": "never", "modality": "text", "backend": "transformers"})
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning, match="zoo-test-typo"):
        get_registry()
    assert "unknown hook 'zoo_register_model'" in failures_text()
    assert "(zoo_register_model; did you mean 'zoo_register_models'," in failures_text()
    with pytest.raises(UnknownModelError):
        zoo.resolve("never")


def test_hookimpl_with_wrong_arguments_is_rejected(site):
    install_plugin(site, "zoo-test-args", "zoo_test_args", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_models(registrar):
            pass
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning, match="zoo-test-args"):
        get_registry()
    assert "registrar" in failures_text() and "failed to validate" in failures_text()


def test_allow_list_environment_variable(site, monkeypatch):
    install_plugin(site, "zoo-test-good", "zoo_test_good", GOOD)
    monkeypatch.setenv("ZOO_PLUGINS", "")
    reset_plugin_manager()
    assert "tiny-text" not in zoo.list_models()
    monkeypatch.setenv("ZOO_PLUGINS", "some-other-plugin, ZOO-TEST-GOOD")
    reset_plugin_manager()
    assert "tiny-text" in zoo.list_models()


def test_registration_error_in_a_plugin_is_isolated(site):
    install_plugin(site, "zoo-test-badfield", "zoo_test_badfield", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_models(register):
            register({"name": "bad", "modality": "text", "backend": "transformers", "embed_dims": 3})
            register({"name": "good-after-bad", "modality": "text", "backend": "transformers"})
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning):
        names = zoo.list_models()
    assert "good-after-bad" in names and "bad" not in names
    assert "unknown field 'embed_dims'; did you mean 'embed_dim'?" in failures_text()


def test_hook_resolve_source_serves_a_mirror_and_is_still_verified(minilm_dir, tmp_path):
    import shutil

    mirror = tmp_path / "mirror"
    shutil.copytree(minilm_dir, mirror)

    class Mirror:
        calls = []

        @zoo.hookimpl
        def zoo_resolve_source(self, spec, network):
            self.calls.append((spec.name, network))
            return mirror if spec.name == "minilm-l6" else None

    get_plugin_manager().register(Mirror(), name="mirror")
    model = zoo.load("minilm-l6")
    assert model.files.root == mirror and Mirror.calls == [("minilm-l6", True)]
    (mirror / "vocab.txt").write_text("tampered")
    with pytest.raises(zoo.IntegrityError, match="vocab.txt"):
        zoo.load("minilm-l6")


def test_hook_load_pretrained_can_take_over(minilm):
    class Override:
        @zoo.hookimpl
        def zoo_load_pretrained(self, spec):
            return minilm if spec.name == "minilm-l6" else None

    get_plugin_manager().register(Override(), name="override")
    assert zoo.load("minilm-l6") is minilm


def test_hook_load_pretrained_returning_none_everywhere_is_a_plugin_error(monkeypatch):
    from zoo.catalog import _defaults as defaults

    monkeypatch.setattr(defaults, "zoo_load_pretrained", zoo.hookimpl(trylast=True)(
        lambda spec, files, adapter_class, requires, device, dtype, options: None))
    reset_plugin_manager()
    with pytest.raises(zoo.PluginError, match="no plugin could load 'minilm-l6'.*returned None"):
        zoo.load("minilm-l6")


def test_hook_finetune_can_take_over_and_receives_one_config(minilm, tmp_path):
    from zoo.training._config import FinetuneConfig

    seen = []

    class Trainer:
        @zoo.hookimpl
        def zoo_finetune(self, model, train, val, config):
            seen.append((model, train, val, config))
            return "trained elsewhere" if config.strategy == "full" else None

    get_plugin_manager().register(Trainer(), name="trainer")
    data = (["good", "bad"], ["pos", "neg"])
    assert minilm.finetune(data, output_dir=tmp_path / "a", strategy="full", epochs=7) == "trained elsewhere"
    model, train, val, config = seen[0]
    assert model is minilm and train == data and val is None
    assert isinstance(config, FinetuneConfig) and (config.epochs, config.output_dir) == (7, tmp_path / "a")
    result = minilm.finetune(data, output_dir=tmp_path / "b", strategy="linear-probe", epochs=1, progress=False)
    assert result.model.labels == ["neg", "pos"]  # the built-in trainer ran when the plugin declined


def test_registration_hooks_refuse_wrapper_implementations():
    class Wrapping:
        @zoo.hookimpl(wrapper=True)
        def zoo_register_models(self, register):
            return (yield)

    pm = build_plugin_manager(entry_points=False)
    pm.register(Wrapping(), name="wrapping")
    with pytest.warns(RuntimeWarning, match="wrapping failed to register"):
        registry = build_registry(pm)
    assert "registration hook: implement it plainly" in "\n".join(str(f) for f in registry.failures)
    assert "minilm-l6" in registry.specs


def test_hook_spec_from_path_recognises_a_custom_folder(tmp_path, minilm_dir):
    marker = tmp_path / "custom"
    marker.mkdir()
    (marker / "MY_FORMAT").write_text("x")

    class Recogniser:
        @zoo.hookimpl
        def zoo_spec_from_path(self, path):
            if (path / "MY_FORMAT").exists():
                return zoo.resolve("minilm-l6").replace(name=str(path))
            return None

    get_plugin_manager().register(Recogniser(), name="recogniser")
    assert zoo.resolve(str(marker)).name == str(marker)
    with pytest.raises(zoo.ZooError, match="not a model folder"):
        zoo.resolve(str(tmp_path))


def test_hook_register_modalities_and_register_adapters():
    class NewModality:
        @zoo.hookimpl
        def zoo_register_modalities(self, register):
            register("smell", decode="builtins:str", description="odours")

        @zoo.hookimpl
        def zoo_register_adapters(self, register):
            register("nose", "zoo.adapters.transformers:TransformersAdapter", schemes=("nose",))

    pm = build_plugin_manager(entry_points=False)
    pm.register(NewModality(), name="new")
    registry = build_registry(pm)
    assert registry.modality("smell").decode(5) == "5"
    assert registry.adapter_entry("nose").load_class().__name__ == "TransformersAdapter"
    assert registry.schemes["nose"] == "nose"


HOOKSPECS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("zoo_"))


def test_the_hookspecs_are_the_documented_nine():
    assert len(HOOKSPECS) == 9, HOOKSPECS


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hookspec_is_documented_and_typed(name):
    fn = getattr(hookspecs, name)
    assert fn.__doc__ and len(fn.__doc__.split()) > 15
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty
    for param in sig.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, param.name
        assert f":param {param.name}:" in fn.__doc__, param.name


def test_hook_register_commands_adds_a_verb_and_a_clash_names_both_plugins(site, capsys):
    from zoo.cli import main

    install_plugin(site, "zoo-test-verb", "zoo_test_verb", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_commands(register):
            command = register("hello", lambda args: print(f"hello {args.who}") or 3, help="say hello")
            command.add_argument("who")
            register("embed", lambda args: 0, help="taken")
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning, match="zoo-test-verb"):
        assert main(["hello", "plugins"]) == 3
    assert capsys.readouterr().out == "hello plugins\n"
    assert "command 'embed' is registered by both zoo.cli and zoo-test-verb (zoo_test_verb)" in failures_text()
    assert main(["info", "minilm-l6"]) == 0  # zoo's own verbs still work


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hookspec_has_a_test(name):
    """As datasette does: each hook has a ``test_hook_<name>...`` test here that implements it."""
    short = name.removeprefix("zoo_")
    assert any(short in test for test in globals() if test.startswith("test_hook_")), f"no test_hook_* for {name}"


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hookspec_is_in_the_plugin_docs(name):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    signature = f"{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})"
    assert f"### `{signature}`" in docs, f"docs/plugins.md lacks a section for {signature}"


def test_model_of_an_unserved_modality_or_backend_is_reported_and_left_out(site):
    install_plugin(site, "zoo-test-orphan", "zoo_test_orphan", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_models(register):
            register({"name": "smell-net", "modality": "smell", "backend": "transformers"})
            register({"name": "odd-backend", "modality": "text", "backend": "nosuch"})
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning):
        names = zoo.list_models()
    assert "smell-net" not in names and "odd-backend" not in names and "minilm-l6" in names
    text = failures_text()
    assert "'smell-net' needs modality 'smell', which no plugin registers; install or enable" in text
    assert "'odd-backend' needs backend 'nosuch', which no adapter serves" in text


def test_a_hook_that_looks_models_up_while_registering_gets_a_clear_error(site):
    install_plugin(site, "zoo-test-reentrant", "zoo_test_reentrant", """
        import zoo
        from zoo import hookimpl

        @hookimpl
        def zoo_register_models(register):
            zoo.resolve("minilm-l6")
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning):
        assert "minilm-l6" in zoo.list_models()
    assert "cannot look models up" in failures_text()


def test_hook_register_kinds_adds_a_kind_and_its_mistakes_name_the_plugin(site):
    install_plugin(site, "zoo-test-kinds", "zoo_test_kinds", """
        from zoo import hookimpl

        @hookimpl
        def zoo_register_kinds(register):
            register("bag-of-words", description="counts words", verbs=("featurize",), rows="zoo_test_kinds:Rows")
            register("reranker", description="scores pairs again", verbs=("score",))

        @hookimpl
        def zoo_register_models(register):
            register({"name": "counted", "modality": "text", "backend": "transformers", "kind": "bag-of-words"})
            register({"name": "mystery", "modality": "text", "backend": "transformers", "kind": "mystery"})
    """)
    reset_plugin_manager()
    with pytest.warns(RuntimeWarning, match="zoo-test-kinds"):
        registry = get_registry()
    assert registry.kinds["bag-of-words"].owner.plugin == "zoo_test_kinds" and zoo.resolve("counted").kind == "bag-of-words"
    text = failures_text()
    assert "kind 'reranker' registered by zoo-test-kinds (zoo_test_kinds) is already registered by zoo" in text
    assert "model 'mystery' needs model kind 'mystery', which no plugin registers" in text
    with pytest.raises(UnknownModelError):
        zoo.resolve("mystery")
    with pytest.raises(ValueError, match=r"kind must be one of embedder, reranker, multi-vector, bag-of-words .*not 'bag-of-word'"):
        zoo.resolve("counted", kind="bag-of-word")


@pytest.mark.parametrize(("name", "verbs", "rows", "message"), [
    ("odd", ("featurize", "embed"), "m:Rows", "names verb 'embed'; verbs are featurize, classify, finetune, score"),
    ("odd", ("featurize",), None, "a kind that featurizes names its rows"),
    ("odd", ("score",), "m:Rows", "a kind that featurizes names its rows (rows=RowFormat), and only such a kind does"),
    ("odd", ("featurize",), dict, "rows= takes a zoo.RowFormat instance or a 'module:Class' string, not <class"),
    ("odd", ("featurize", "finetune"), "m:Rows", "classify and finetune train on dense vectors"),
    ("2d", ("score",), None, "a kind is named with lower-case letters, digits and -, starting with a letter"),
])
def test_a_kind_zoo_could_not_use_is_refused(name, verbs, rows, message):
    from zoo.catalog._registry import Kind, Owner
    from zoo.errors import RegistryError

    with pytest.raises(RegistryError, match=re.escape(message)):
        Kind(name, "does odd things", verbs, rows, Owner("odd-plugin", None)).check()


def test_a_kind_whose_rows_cannot_be_made_names_its_plugin():
    from zoo.catalog._registry import Kind, Owner
    from zoo.errors import PluginError

    for rows, message in (("zoo_no_such_module:Rows", "cannot be made (ModuleNotFoundError"),
                          ("zoo.core._rows:DenseBuffer", "cannot be made (TypeError"),
                          ("collections:OrderedDict", "name a OrderedDict, not a zoo.RowFormat subclass")):
        kind = Kind("odd", "does odd things", ("featurize",), rows, Owner("odd-plugin", None))
        kind.check()
        with pytest.raises(PluginError, match=re.escape(f"kind 'odd' from odd-plugin: its rows {rows!r} ") + ".*"
                           + re.escape(message)):
            kind.row_format()
