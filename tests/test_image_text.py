"""Image-text models: tiny random open_clip and HF CLIP models saved in each library's own format,
loaded through zoo from their folders, against the library's own encode calls."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
import zoo.testing
from zoo.errors import InputError

skimage_data = pytest.importorskip("skimage.data")
TEXTS = ["a cup of coffee", "a cat", "a rocket in the sky, ready for launch"]


def _unit(t):
    import torch

    return torch.nn.functional.normalize(t.float(), dim=-1).numpy()


@pytest.fixture(scope="module")
def pictures():
    from PIL import Image

    return [Image.fromarray(a) for a in (skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket())]


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    from tiny_models import hf_clip_folder

    return hf_clip_folder(tmp_path_factory.mktemp("hf-clip-tiny"), TEXTS)


def test_open_clip_equals_encode_image_and_encode_text(open_clip_dir, pictures):
    import open_clip
    import torch

    model = zoo.load(str(open_clip_dir), device="cpu")
    assert model.modality == "image-text" and model.embed_dim == 32
    images, texts = model.featurize(pictures), model.featurize_texts(TEXTS)
    ident = f"local-dir:{open_clip_dir}"
    ref, _, preprocess = open_clip.create_model_and_transforms(ident)
    ref.eval()
    with torch.no_grad():
        expected_images = ref.encode_image(torch.stack([preprocess(p) for p in pictures]))
        expected_texts = ref.encode_text(open_clip.get_tokenizer(ident)(TEXTS))
    np.testing.assert_allclose(images, _unit(expected_images), atol=1e-6)
    np.testing.assert_allclose(texts, _unit(expected_texts), atol=1e-6)
    np.testing.assert_allclose(model.featurize_images(pictures), images)
    assert model.preprocess["image"] is not None and model.preprocess["text"] is not None


def test_text_tower_takes_prompts_and_output_options(open_clip_dir):
    import open_clip
    import torch

    model = zoo.load(str(open_clip_dir), device="cpu")
    ident = f"local-dir:{open_clip_dir}"
    ref = open_clip.create_model_and_transforms(ident)[0].eval()
    with torch.no_grad():
        expected = _unit(ref.encode_text(open_clip.get_tokenizer(ident)(["a photo of " + t for t in TEXTS])))
    np.testing.assert_allclose(model.featurize_texts(TEXTS, prompt_text="a photo of "), expected, atol=1e-6)
    np.testing.assert_array_equal(model.featurize_texts(TEXTS, precision="ubinary"),
                                  np.packbits(model.featurize_texts(TEXTS) > 0, axis=-1))
    with pytest.raises(zoo.UnsupportedOptionError, match="embeds image-text inputs, not texts"):
        model.featurize([np.zeros((8, 8, 3), np.uint8)], prompt_text="a photo of ")


def test_hf_clip_equals_get_image_and_text_features(hf_clip_dir, pictures):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = zoo.load(str(hf_clip_dir), device="cpu")
    assert (model.modality, model.backend, model.embed_dim) == ("image-text", "transformers", 16)
    ref = CLIPModel.from_pretrained(hf_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(hf_clip_dir)
    with torch.no_grad():
        image_out = ref.get_image_features(**processor(images=pictures, return_tensors="pt"))
        text_out = ref.get_text_features(**processor(text=TEXTS, return_tensors="pt", padding=True))
    np.testing.assert_allclose(model.featurize(pictures), _unit(getattr(image_out, "pooler_output", image_out)),
                               atol=1e-6)
    np.testing.assert_allclose(model.featurize_texts(TEXTS, batch_size=2),
                               _unit(getattr(text_out, "pooler_output", text_out)), atol=1e-6)


@pytest.mark.slow
def test_a_sentence_transformers_model_of_images_and_texts_equals_its_encode(hf_clip_dir, pictures, tmp_path):
    """A SentenceTransformer over a CLIP (its Transformer takes text and image, sentence-transformers
    5.4 on), saved by SentenceTransformer.save: both towers equal encode, through the library's own
    preprocessing and pipeline, each row the same alone as in any batch; it saves and loads back."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(hf_clip_dir), device="cpu")
    st.save(str(tmp_path / "st-clip"), create_model_card=False)  # the card would look its base up online
    model = zoo.load(str(tmp_path / "st-clip"), device="cpu")
    assert (model.modality, model.kind) == ("image-text", "embedder")
    assert model.spec.config["folder"]["format"] == "sentence-transformers-image-text"
    images = model.featurize(pictures, batch_size=2)
    assert np.abs(images - st.encode(pictures)).max() <= 1e-5
    assert np.abs(model.featurize_texts(TEXTS, batch_size=2) - st.encode(TEXTS)).max() <= 1e-5
    assert np.abs(np.concatenate([model.featurize([p]) for p in pictures]) - images).max() <= 1e-5
    again = zoo.load(model.save(tmp_path / "saved"), device="cpu")
    assert np.abs(again.featurize_texts(TEXTS) - model.featurize_texts(TEXTS)).max() <= 1e-6
    with pytest.raises(InputError, match="input 0: TypeError: expected an image .* got dict"):
        model.featurize([{"text": "a cat", "image": pictures[0]}])  # CLIP embeds each alone
    with pytest.raises(zoo.UnsupportedOptionError, match="has no combined tower"):
        model.featurize([{"text": "a cat", "image": pictures[0]}], tower="combined")
    # a pipeline ending in Normalize: normalize=False gives the rows before it, as for text pipelines
    from sentence_transformers.base.modules import Normalize

    SentenceTransformer(modules=[st[0], Normalize()], device="cpu").save(str(tmp_path / "unit"), create_model_card=False)
    unit = zoo.load(str(tmp_path / "unit"), device="cpu")
    assert np.abs(unit.featurize(pictures) - _unit(torch.from_numpy(st.encode(pictures)))).max() <= 1e-5
    assert np.abs(unit.featurize(pictures, normalize=False) - st.encode(pictures)).max() <= 1e-5
    results = zoo.testing.check_model(str(tmp_path / "st-clip"), workdir=tmp_path)
    assert all(r.status == "pass" for r in results), zoo.testing.format_table(results)


def test_a_legacy_sentence_transformers_clip_folder_equals_its_encode(hf_clip_dir, pictures, tmp_path):
    """sentence-transformers' CLIPModel module (its layout before 5.4, which the library still reads
    as a Transformer over texts and images): both towers equal encode."""
    from sentence_transformers import SentenceTransformer
    from tiny_models import as_legacy_st_clip

    folder = as_legacy_st_clip(hf_clip_dir, tmp_path / "legacy")
    model, st = zoo.load(str(folder), device="cpu"), SentenceTransformer(str(folder), device="cpu")
    assert model.spec.config["folder"]["format"] == "sentence-transformers-image-text"
    assert np.abs(model.featurize(pictures, batch_size=2) - st.encode(pictures)).max() <= 1e-5
    assert np.abs(model.featurize_texts(TEXTS, batch_size=2) - st.encode(TEXTS)).max() <= 1e-5


def test_image_and_text_embeddings_share_one_contract(open_clip_dir, pictures):
    model = zoo.load(str(open_clip_dir))
    images, texts = model.featurize(pictures), model.featurize_texts(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, rtol=1e-5)
    scores = images @ texts.T  # cosine similarity
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    assert model.featurize_texts([]).shape == (0, 32) and model.featurize([]).shape == (0, 32)
    with pytest.raises(InputError, match="input 1: TypeError: expected str, got NoneType"):
        model.featurize_texts(["ok", None])
    with pytest.raises(InputError, match="input 0"):
        model.featurize([42])


def test_open_clip_pass_through_names():
    spec = zoo.resolve("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert spec.modality == "image-text" and spec.sources[0].location == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    with pytest.raises(zoo.ZooError, match="no pretrained tag 'nope'"):
        zoo.resolve("open_clip:ViT-B-32/nope")
    with pytest.raises(zoo.UnknownModelError, match="did you mean 'open_clip:ViT-B-32'"):
        zoo.resolve("open_clip:ViT-B-33/openai")
