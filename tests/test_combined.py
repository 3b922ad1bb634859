"""Combined inputs (a text and an image in one item) and sentence-transformers' vision-language
embedders: texts, images and combined items each equal ``SentenceTransformer.encode`` on a tiny
random Qwen2-VL saved by the library, through featurize and zoo embed's table columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import VLM_TEXTS, vlm_st_folder

import zoo
from zoo.errors import InputError, UnsupportedOptionError


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vlm_st_folder(tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from PIL import Image

    folder, rng = tmp_path_factory.mktemp("pictures"), np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = folder / f"p{i}.png"
        Image.fromarray((rng.random((56 + 28 * (i % 2), 56, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def library(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def test_texts_images_and_combined_items_equal_encode(vlm, pictures):
    from PIL import Image

    model, st = zoo.load(vlm, device="cpu"), library(vlm)
    assert model.spec.config["folder"]["format"] == "sentence-transformers-multimodal"
    assert {"vision", "text", "combined"} <= set(model.towers)
    images = [Image.open(p).convert("RGB") for p in pictures]
    combined = [{"text": t, "image": str(p)} for t, p in zip(VLM_TEXTS, pictures)]
    expected = st.encode([{"text": t, "image": i} for t, i in zip(VLM_TEXTS, images)])
    assert np.abs(model.featurize([str(p) for p in pictures], batch_size=3) - st.encode(images)).max() <= 1e-5
    assert np.abs(model.featurize(VLM_TEXTS, tower="text", batch_size=3) - st.encode(VLM_TEXTS)).max() <= 1e-5
    rows = model.featurize(combined, tower="combined", batch_size=3)
    assert np.abs(rows - expected).max() <= 1e-5
    alone = np.concatenate([model.featurize([item], tower="combined") for item in combined])
    assert np.abs(alone - rows).max() <= 1e-5  # a row does not depend on its batch
    assert np.abs(rows - model.featurize(VLM_TEXTS, tower="text")).max() > 1e-3  # the image counts
    # the parts in the item's own order, as the library reads them
    image_first = [{"image": str(p), "text": t} for t, p in zip(VLM_TEXTS, pictures)]
    assert np.abs(model.featurize(image_first, tower="combined")
                  - st.encode([{"image": i, "text": t} for t, i in zip(VLM_TEXTS, images)])).max() <= 1e-5
    # a text that looks like an image's URL or path is a text, never fetched or opened
    lookalikes = ["https://example.com/cat.png", str(pictures[0])]
    assert np.abs(model.featurize(lookalikes, tower="text") - st.encode([{"text": t} for t in lookalikes])).max() \
        <= 1e-5


def test_what_a_combined_tower_does_not_take_is_named(vlm, pictures, hf_clip_dir_for_combined):
    model = zoo.load(vlm, device="cpu")
    for bad, says in (({"text": "a cat"}, "holds exactly the parts text, image"),
                      ({"text": "a cat", "image": str(pictures[0]), "audio": "x"}, "holds exactly the parts"),
                      ({"text": 3, "image": str(pictures[0])}, "its text: expected str"),
                      ({"text": "a cat", "image": "missing.png"}, "its image"), ("a cat", "is a mapping")):
        with pytest.raises(InputError, match=says):
            model.featurize([bad], tower="combined")
    clip = zoo.load(hf_clip_dir_for_combined, device="cpu")
    with pytest.raises(UnsupportedOptionError, match="has no combined tower"):
        clip.featurize([{"text": "a cat", "image": str(pictures[0])}], tower="combined")


def test_a_role_s_prompt_goes_in_as_a_system_message_for_every_input(pictures, tmp_path):
    from PIL import Image
    from tiny_models import vlm_st_folder

    folder = vlm_st_folder(tmp_path, prompts={"query": "Find the picture a question is about.", "document": ""})
    model, st = zoo.load(folder, device="cpu"), library(folder)
    images = [Image.open(p).convert("RGB") for p in pictures]
    combined = [{"text": t, "image": str(p)} for t, p in zip(VLM_TEXTS, pictures)]
    for tower, inputs, theirs in (("text", VLM_TEXTS, [{"text": t} for t in VLM_TEXTS]),
                                  ("vision", [str(p) for p in pictures], images),
                                  ("combined", combined, [{"text": t, "image": i} for t, i in zip(VLM_TEXTS, images)])):
        queries = model.featurize(inputs, tower=tower, role="query", batch_size=3)
        assert np.abs(queries - st.encode_query(theirs)).max() <= 1e-5
        assert np.abs(model.featurize(inputs, tower=tower, role="document") - st.encode_document(theirs)).max() <= 1e-5
        assert np.abs(queries - model.featurize(inputs, tower=tower)).max() > 1e-4  # the prompt counts
        asked = model.featurize(inputs, tower=tower, prompt_text="Describe it.")
        assert np.abs(asked - st.encode(theirs, prompt="Describe it.")).max() <= 1e-5
    assert model.embed_options(tower="vision", role="query").provenance()["prompt_name"] == "query"


def test_an_input_the_library_refuses_is_named_and_the_others_go_on(vlm, pictures, tmp_path):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (1200, 4), "white").save(strip)  # sides too unequal for Qwen2-VL's processor
    model, st = zoo.load(vlm, device="cpu"), library(vlm)
    for tower, asked, good in (("vision", [str(pictures[0]), str(strip)], [Image.open(pictures[0]).convert("RGB")]),
                               ("combined", [{"text": "a", "image": str(pictures[0])}, {"text": "b", "image": str(strip)}],
                                [{"text": "a", "image": Image.open(pictures[0]).convert("RGB")}])):
        with pytest.raises(InputError, match=r"input 1\b.*aspect ratio"):
            model.featurize(asked, tower=tower)
        with pytest.warns(RuntimeWarning, match="skipped 1 of 2"):
            rows = model.featurize(asked, tower=tower, on_error="skip", role="query")
        assert rows.shape[0] == 1 and np.abs(rows - st.encode(good, prompt_name="query")).max() <= 1e-5


@pytest.fixture(scope="module")
def hf_clip_dir_for_combined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import hf_clip_folder

    return hf_clip_folder(tmp_path_factory.mktemp("clip"), VLM_TEXTS)


@pytest.mark.slow
def test_zoo_embed_combines_a_text_column_and_an_image_column(vlm, pictures, tmp_path, capsys):
    import pyarrow.parquet as pq
    from PIL import Image

    from zoo.cli import main

    table = tmp_path / "pairs.csv"
    table.write_text("caption,photo\n" + "".join(f"{t},{p}\n" for t, p in zip(VLM_TEXTS, pictures)))
    out = tmp_path / "pairs.parquet"
    assert main(["embed", str(vlm), str(table), "--tower", "combined", "--column", "text=caption,image=photo",
                 "-o", str(out), "-q"]) == 0
    assert "columns text=caption,image=photo" in capsys.readouterr().out
    written = pq.read_table(out)
    assert json.loads(written.schema.metadata[b"zoo"])["tower"] == "combined"
    st = library(vlm)
    expected = st.encode([{"text": t, "image": Image.open(p).convert("RGB")} for t, p in zip(VLM_TEXTS, pictures)])
    assert np.abs(np.stack(written.column("embedding").to_numpy(zero_copy_only=False)) - expected).max() <= 1e-5
    hashes = written.column("content_sha256").to_pylist()
    from zoo.embeddings._inputs import content_hash

    edited = tmp_path / "edited.png"  # one path, another image's bytes: another hash
    edited.write_bytes(pictures[1].read_bytes())
    other = content_hash({"text": VLM_TEXTS[0], "image": str(edited)}, "table")
    edited.write_bytes(pictures[0].read_bytes())
    same = content_hash({"text": VLM_TEXTS[0], "image": str(edited)}, "table")
    assert same == hashes[0] != other
    assert content_hash({"image": str(edited), "text": VLM_TEXTS[0]}, "table") != same  # the parts' order counts
    assert main(["embed", str(vlm), str(table), "--tower", "combined", "--column", "text=caption,image",
                 "-o", str(tmp_path / "bad.parquet"), "-q"]) == 1
    assert "name each part's column as PART=COLUMN" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_zoo_serve_takes_combined_objects(vlm, pictures):
    import base64

    from test_serve import Server

    model = zoo.load(vlm, device="cpu")
    image = "data:image/png;base64," + base64.b64encode(pictures[0].read_bytes()).decode()
    server = Server(str(vlm))
    try:
        answer = server.embed(str(vlm), [{"text": VLM_TEXTS[0], "image": image}, VLM_TEXTS[1], image])
        assert answer.status_code == 200, answer.text
        rows = np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)
        expected = [model.featurize([{"text": VLM_TEXTS[0], "image": str(pictures[0])}], tower="combined")[0],
                    model.featurize([VLM_TEXTS[1]], tower="text")[0], model.featurize([str(pictures[0])])[0]]
        assert np.abs(rows - np.stack(expected)).max() <= 1e-5
        alone = server.embed(str(vlm), [{"text": VLM_TEXTS[1]}, {"image": image}])  # one part: that input alone
        assert np.abs(np.array([d["embedding"] for d in alone.json()["data"]], dtype=np.float32)
                      - np.stack(expected[1:])).max() <= 1e-5
        nested: object = "a cat"
        for _ in range(800):
            nested = {"text": nested}
        for bad, says in (({"text": "a cat", "image": str(pictures[0])}, "must be a data URL"),
                          ({"text": "a cat", "audio": "x"}, "it holds one of text, image, video, audio"),
                          ({"image": {"text": "a", "image": image}}, "it holds one of text, image, video, audio"),
                          (nested, "it holds one of text, image, video, audio")):
            refused = server.embed(str(vlm), ["fine", bad])
            assert refused.status_code == 400 and says in refused.json()["error"]["message"], refused.text
            assert refused.json()["error"]["param"] == "input[1]"
    finally:
        server.stop()
