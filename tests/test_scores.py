"""Published scores in the catalogue: each with its source, shown by `zoo info`, sortable in `zoo list`."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.cli import main
from zoo.errors import RegistryError
from zoo.catalog._spec import ModelSpec

SOURCE = "https://example.org/paper"


def test_every_published_score_has_a_number_and_a_source():
    scored = {name: zoo.info(name)["scores"] for name in zoo.list_models() if zoo.info(name)["scores"]}
    assert {"efficientnet-lite0", "resnet50-torchvision", "bge-small-en-v1.5", "clip-vit-b-32"} <= set(scored)
    for name, scores in scored.items():
        for metric, score in scores.items():
            assert isinstance(score["value"], (int, float)) and score["source"].startswith("https://"), name
    # No figure is invented for models whose authors published none here.
    assert zoo.info("ge2e-speaker")["scores"] == {} and zoo.info("wav2vec2-base")["scores"] == {}


def test_list_sort_orders_by_the_published_figure_best_first(capsys):
    names = zoo.list_models(sort="top1")
    values = [zoo.info(n)["scores"]["top1"]["value"] for n in names]
    assert values == sorted(values, reverse=True) and len(names) == 5
    assert names[-1] == "efficientnet-lite0"  # 74.83, the lowest published top-1 here
    assert zoo.list_models(modality="image-text", sort="zeroshot-top1")[0] == "siglip-base-patch16-224"
    assert main(["list", "--sort", "top1"]) == 0
    out = capsys.readouterr().out
    lines = [line.split()[0] for line in out.splitlines()[2:2 + len(names)]]
    assert lines == names and "74.83" in out and "ImageNet-1k validation top-1" in out
    assert main(["list", "--sort", "mteb", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == ["bge-small-en-v1.5", "e5-small-v2"]
    assert listed[0]["scores"]["mteb"]["value"] == 62.17


def test_lower_is_better_metrics_sort_ascending():
    from zoo.catalog._registry import CATALOGUE_OWNER, Registry

    registry = Registry()
    for name, eer in (("a", 4.5), ("b", 2.0), ("c", 3.1)):
        registry.add_spec(ModelSpec.from_dict({"name": name, "modality": "audio", "backend": "ge2e",
                                               "scores": {"eer": {"value": eer, "source": SOURCE}}}), CATALOGUE_OWNER)
    assert registry.list_models(sort="eer") == ["b", "c", "a"]


def test_an_unknown_sort_metric_is_named_with_a_suggestion():
    with pytest.raises(RegistryError, match=r"no model publishes a 'top-1' score; did you mean 'top1'"):
        zoo.list_models(sort="top-1")


@pytest.mark.parametrize(("score", "message"), [
    ({"value": 80.1}, "needs its source"),
    ({"value": "80", "source": SOURCE}, "value must be a number"),
    ({"value": 80.1, "source": SOURCE, "dataset": "x"}, "unknown field 'dataset'"),
    (80.1, "must be a mapping"),
])
def test_a_score_without_a_number_or_a_source_is_refused(score, message):
    with pytest.raises(RegistryError, match=message):
        ModelSpec.from_dict({"name": "m", "modality": "vision", "backend": "timm", "scores": {"top1": score}})
