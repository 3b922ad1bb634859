"""The training features every objective and strategy shares (:mod:`zoo.training._optim`): the
learning-rate schedule with warmup, gradient accumulation equal to a larger batch, clipping, mixed
precision, early stopping, layer-wise learning-rate decay and class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import zoo
from zoo.training._config import FinetuneConfig
from zoo.training._optim import Stepper, make_scheduler, param_groups

pytestmark = pytest.mark.filterwarnings("ignore:.*has no sentence-transformers modules.json")


def _stepper(tmp_path, params, optimizer=None, steps=8, **options):
    config = FinetuneConfig(output_dir=tmp_path, **options)
    optimizer = optimizer or torch.optim.SGD(params, lr=1.0)
    return Stepper(optimizer, make_scheduler(optimizer, steps, config), params, config, "cpu"), optimizer


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_the_learning_rate_warms_up_then_follows_its_schedule(tmp_path, schedule):
    """10 steps, warmup 0.2: 2 steps from 0, then the schedule; a run too short to warm up (one
    step) trains at the full rate rather than spending its only step at 0."""
    param = torch.nn.Parameter(torch.zeros(3))
    stepper, optimizer = _stepper(tmp_path, [param], steps=10, schedule=schedule, warmup=0.2)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(3)
        stepper.step(0.0)
    after = {"linear": lambda s: (10 - s) / 8, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)),
             "constant": lambda s: 1.0}[schedule]
    expected = [s / 2 if s < 2 else after(s) for s in range(10)]
    assert seen == pytest.approx(expected, abs=1e-9)
    short, optimizer = _stepper(tmp_path, [param], steps=1, schedule=schedule, warmup=0.2)
    assert optimizer.param_groups[0]["lr"] == 1.0


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
@pytest.mark.parametrize(("total", "warmup"), [(37, 0.1), (5, 0.0), (6, 0.5), (4, 0.99), (1, 0.3)])
def test_each_schedule_is_transformers_own(tmp_path, schedule, total, warmup):
    """The rate at every step, and after the last, equals transformers' ``get_scheduler``'s."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    theirs_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    theirs = get_scheduler(name, theirs_opt, num_warmup_steps=int(total * warmup), num_training_steps=total)
    ours_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    ours = make_scheduler(ours_opt, total, FinetuneConfig(output_dir=tmp_path, schedule=schedule, warmup=warmup))
    for _ in range(total + 1):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(theirs_opt.param_groups[0]["lr"], abs=1e-12)
        for scheduler, optimizer in ((ours, ours_opt), (theirs, theirs_opt)):
            optimizer.step()
            scheduler.step()


def test_clipping_bounds_the_gradients_global_norm(tmp_path):
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    stepper, _ = _stepper(tmp_path, [a, b], schedule="constant", warmup=0.0, max_grad_norm=0.5)
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)  # global norm sqrt(27 + 64)
    stepper.step(0.0)  # SGD at lr 1: the step is minus the clipped gradient
    assert torch.cat([a.detach(), b.detach()]).norm().item() == pytest.approx(0.5, rel=1e-5)
    assert a.grad is None  # zeroed for the next group


@pytest.mark.filterwarnings("ignore:precision=.* this CPU has no")
def test_an_fp16_step_whose_gradients_overflow_is_skipped_and_gradients_are_unscaled_before_clipping(tmp_path):
    """fp16's loss scaler (torch's ``GradScaler``, on the CPU as on CUDA): a group whose scaled
    gradients overflow takes no step and halves the scale; the next is unscaled, then clipped."""
    param = torch.nn.Parameter(torch.ones(3))
    stepper, optimizer = _stepper(tmp_path, [param], steps=4, precision="fp16", schedule="linear", warmup=0.0,
                                  max_grad_norm=1.0)
    scale = stepper.scaler.get_scale()
    stepper.backward((param * torch.tensor([math.inf, 1.0, 1.0])).sum(), 1.0)
    stepper.step(0.0)
    assert param.detach().tolist() == [1.0, 1.0, 1.0]
    assert stepper.scaler.get_scale() == scale / 2
    assert optimizer.param_groups[0]["lr"] == 1.0  # the schedule waits for a step taken
    stepper.backward((param * torch.tensor([3.0, 4.0, 0.0])).sum(), 1.0)  # gradient norm 5, clipped to 1
    stepper.step(0.0)  # SGD at lr 1: minus the clipped gradient, as if no scale had been applied
    assert param.detach().tolist() == pytest.approx([0.4, 0.2, 1.0], abs=1e-6)
    assert optimizer.param_groups[0]["lr"] == 0.75
    assert stepper.state_dict()["scaler"]["scale"] == scale / 2  # saved with every checkpoint, for resuming


@pytest.mark.parametrize(("precision", "probe"), [("bf16", "_is_mkldnn_bf16_supported"),
                                                  ("fp16", "_is_mkldnn_fp16_supported")])
def test_mixed_precision_warns_on_a_cpu_that_would_emulate_it(tmp_path, monkeypatch, precision, probe):
    """On an AVX2 CPU bf16 trained MiniLM 25x slower than fp32: said where the CPU lacks the
    instructions, and only there."""
    import warnings

    param = torch.nn.Parameter(torch.zeros(1))
    monkeypatch.setattr(torch.ops.mkldnn, probe, lambda: False)
    with pytest.warns(UserWarning, match=f"precision='{precision}': this CPU has no {precision} instructions"):
        _stepper(tmp_path, [param], precision=precision)
    monkeypatch.setattr(torch.ops.mkldnn, probe, lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _stepper(tmp_path, [param], precision=precision)
        _stepper(tmp_path, [param], precision="fp32")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:precision=.* this CPU has no")
@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_trains_every_forward_pass_under_autocast(tmp_path, monkeypatch, precision, dtype):
    import zoo.training._loop as loop
    from tiny_models import timm_folder

    seen = []

    def watched(encoder, batch, pool, normalize):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return features(encoder, batch, pool, normalize)

    features = loop.features
    monkeypatch.setattr(loop, "features", watched)
    base = zoo.load(str(timm_folder(tmp_path / "vit", "test_vit")), device="cpu")
    images, labels = _images(16)
    run = base.finetune((images, labels), strategy="full", precision=precision, epochs=3, batch_size=8, lr=1e-2,
                        max_grad_norm=1.0, output_dir=tmp_path / precision, progress=False)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert seen and set(seen) == {dtype}  # every training forward pass ran under autocast


def _images(n, classes=("a", "b")):
    rng = np.random.default_rng(0)
    labels = [classes[i % len(classes)] for i in range(n)]
    images = [np.full((40, 40, 3), 40 if label == "a" else 200, np.uint8) +
              rng.integers(0, 30, (40, 40, 3), dtype=np.uint8) for label in labels]
    return images, labels


@pytest.mark.slow
def test_accumulated_batches_take_the_steps_of_one_larger_batch(tmp_path):
    """A ViT with no dropout nor BatchNorm, every weight training: batch 8 accumulated twice ends
    where batch 16 does."""
    from tiny_models import timm_folder

    base = zoo.load(str(timm_folder(tmp_path / "vit", "test_vit")), device="cpu")
    images, labels = _images(32)
    options = {"strategy": "full", "epochs": 2, "lr": 1e-2, "progress": False, "seed": 1}
    small = base.finetune((images, labels), batch_size=8, accumulate=2, output_dir=tmp_path / "small", **options)
    large = base.finetune((images, labels), batch_size=16, output_dir=tmp_path / "large", **options)
    assert [h["train_loss"] for h in small.history] == pytest.approx([h["train_loss"] for h in large.history],
                                                                     rel=1e-4)
    np.testing.assert_allclose(small.model.predict_proba(images), large.model.predict_proba(images), atol=1e-5)
    one = base.finetune((images, labels), batch_size=8, output_dir=tmp_path / "one", **options)
    assert not np.allclose(one.model.predict_proba(images), large.model.predict_proba(images), atol=1e-4)


def test_early_stopping_ends_a_run_that_stopped_improving_and_stays_ended(tiny_bert_dir, tmp_path):
    base = zoo.load(str(tiny_bert_dir), device="cpu")
    texts = [f"{w} {i}" for i, w in enumerate(["warm sun", "cold snow"] * 8)]
    labels = ["warm" if "sun" in t else "cold" for t in texts]
    options = {"strategy": "linear-probe", "epochs": 6, "lr": 0.0, "val_fraction": 0.25, "progress": False,
               "early_stopping": 2}
    run = base.finetune((texts, labels), output_dir=tmp_path / "run", **options)  # lr 0: nothing improves
    assert len(run.history) == 3 and run.stopped_early and run.best_epoch == 1
    again = base.finetune((texts, labels), output_dir=tmp_path / "run", resume=True, **options)
    assert len(again.history) == 3
    with pytest.raises(zoo.ZooError, match="early_stopping watches the validation score"):
        base.finetune((texts, labels), output_dir=tmp_path / "none", early_stopping=2, epochs=2, progress=False)


def _rates(named, groups):
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {n: rate[id(p)] for n, p in named}


def test_layer_decay_numbers_the_layers_as_timm_does(tmp_path):
    """A timm ViT: each parameter's learning-rate scale equals what timm's own
    param_groups_layer_decay gives it, and so does which parameters escape weight decay."""
    from timm.optim import param_groups_layer_decay

    from tiny_models import timm_folder

    model = zoo.load(str(timm_folder(tmp_path / "vit", "test_vit")), device="cpu")
    named = list(model.model.named_parameters())
    ours = param_groups(named, {id(p) for _, p in named}, 1.0, 0.05, blocks=model.encoder.blocks(), layer_decay=0.6)
    theirs = param_groups_layer_decay(model.model, weight_decay=0.05, layer_decay=0.6, no_weight_decay_list=())
    scale = {id(p): (g["lr_scale"], g["weight_decay"]) for g in theirs for p in g["params"]}
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in ours for p in g["params"]}
    assert len(mine) == len(named) and len({s for s, _ in mine.values()}) > 3
    for name, param in named:
        assert mine[id(param)] == pytest.approx(scale[id(param)]), name


def test_layer_decay_on_bert_and_where_it_is_refused(tiny_bert_dir, open_clip_dir, tmp_path):
    model = zoo.load(str(tiny_bert_dir), device="cpu")
    named = list(model.model.named_parameters())
    by_name = _rates(named, param_groups(named, {id(p) for _, p in named}, 1.0, 0.0, blocks=model.encoder.blocks(),
                                         layer_decay=0.5))
    # the encoder's blocks: layer 0, then layer 1 with the pooler on top of it; the embeddings below
    assert model.encoder.blocks()[-1][-1].startswith("pooler.")
    assert by_name["embeddings.word_embeddings.weight"] == 0.5 ** 2
    assert by_name["encoder.layer.0.attention.self.query.weight"] == 0.5
    assert by_name["encoder.layer.1.output.dense.weight"] == by_name["pooler.dense.weight"] == 1.0
    with pytest.raises(zoo.ZooError, match="layer_decay numbers the blocks of one tower, and this model has 2"):
        zoo.load(str(open_clip_dir), device="cpu").finetune(
            [(np.zeros((32, 32, 3), np.uint8), "a cat")], objective="contrastive", layer_decay=0.7,
            output_dir=tmp_path / "clip")
    with pytest.raises(ValueError, match="a linear probe trains none"):
        FinetuneConfig(output_dir=tmp_path, layer_decay=0.7)


def test_balanced_class_weights_weigh_the_loss_as_scikit_learn_counts(tiny_bert_dir, tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    base = zoo.load(str(tiny_bert_dir), device="cpu")
    texts = [f"sunny day {i}" for i in range(9)] + ["snow storm"] * 3
    labels = ["warm"] * 9 + ["cold"] * 3
    run = base.finetune((texts, labels), class_weights="balanced", lr=0.0, epochs=1, batch_size=64,
                        output_dir=tmp_path / "run", progress=False)  # lr 0: the loss of the head as built
    weights = dict(zip(["cold", "warm"], compute_class_weight("balanced", classes=np.array(["cold", "warm"]),
                                                              y=np.array(labels))))
    p = run.model.predict_proba(texts)
    w = np.array([weights[label] for label in labels])
    picked = p[np.arange(len(labels)), [run.model.labels.index(label) for label in labels]]
    assert run.history[0]["train_loss"] == pytest.approx((w * -np.log(picked)).sum() / w.sum(), rel=1e-4)
    with pytest.raises(zoo.ZooError, match="unknown \\['hot'\\], missing \\['cold'\\]"):
        base.finetune((texts, labels), class_weights={"warm": 1.0, "hot": 2.0}, output_dir=tmp_path / "x",
                      progress=False)


@pytest.mark.slow
def test_class_weights_and_accumulation_take_the_steps_of_one_weighted_batch(tiny_bert_dir, tmp_path):
    base = zoo.load(str(tiny_bert_dir), device="cpu")
    texts = [f"sunny day {i}" for i in range(9)] + [f"snow storm {i}" for i in range(3)]
    labels = ["warm"] * 9 + ["cold"] * 3
    options = {"class_weights": "balanced", "epochs": 2, "lr": 0.05, "progress": False, "seed": 2}
    small = base.finetune((texts, labels), batch_size=4, accumulate=3, output_dir=tmp_path / "small", **options)
    large = base.finetune((texts, labels), batch_size=12, output_dir=tmp_path / "large", **options)
    np.testing.assert_allclose(small.model.predict_proba(texts), large.model.predict_proba(texts), atol=1e-6)


@pytest.mark.slow
def test_tensorboard_gets_each_steps_loss_and_rate_and_each_epochs_metrics(tiny_bert_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = zoo.load(str(tiny_bert_dir), device="cpu")
    texts = [f"{w} {i}" for i, w in enumerate(["warm sun", "cold snow"] * 8)]
    labels = ["warm" if "sun" in t else "cold" for t in texts]
    run = base.finetune((texts, labels), strategy="full", epochs=2, batch_size=4, val_fraction=0.25, warmup=0.5,
                        output_dir=tmp_path / "run", tensorboard=True, progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 7))  # 12 examples, batch 4, 2 epochs
    rates = [e.value for e in events.Scalars("train/lr")]
    assert rates[0] < rates[1] < rates[2] < rates[3] and rates[-1] < rates[3]  # 3 steps warming up, then decay
    logged = [e.value for e in events.Scalars("epoch/val_accuracy")]
    assert logged == pytest.approx([h["val_accuracy"] for h in run.history])


@pytest.mark.slow
def test_augmentation_is_timms_train_transform_of_the_weights_data_config(tmp_path):
    import random

    from timm.data import create_transform

    from tiny_models import timm_folder
    from zoo.training._augment import train_collate

    base = zoo.load(str(timm_folder(tmp_path / "vit", "test_vit")), device="cpu")
    images, labels = _images(8)
    config = FinetuneConfig(output_dir=tmp_path, strategy="full", augment="rand-m9-mstd0.5-inc1")
    collate = train_collate(base.encoder, config)
    data = base.spec.preprocessing
    theirs = create_transform(input_size=data["input_size"], interpolation=data["interpolation"], mean=data["mean"],
                              std=data["std"], is_training=True, auto_augment="rand-m9-mstd0.5-inc1")
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    ours = collate(images)
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    expected = torch.stack([theirs(base.encoder.decode(x)) for x in images])
    assert ours.shape == (8, *data["input_size"]) and torch.equal(ours, expected)
    assert not torch.equal(collate(images), ours)  # drawn anew each time
    run = base.finetune((images, labels), strategy="full", augment="weights", mixup=0.8, cutmix=1.0, epochs=2,
                        batch_size=4, lr=1e-2, output_dir=tmp_path / "run", progress=False)
    loaded = zoo.load(str(tmp_path / "run"), device="cpu")  # prediction keeps the evaluation transform
    np.testing.assert_allclose(loaded.predict_proba(images), run.model.predict_proba(images), atol=1e-5)


def _equal_draws(ours, theirs, items, decode) -> None:
    """Two transforms give the same tensors from the same random state, and new ones each call."""
    import random

    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    drawn = ours(items)
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    assert torch.equal(drawn, torch.stack([theirs(decode(x)) for x in items]))
    assert not torch.equal(ours(items), drawn)


@pytest.mark.slow
def test_open_clip_augments_with_its_own_train_transform(open_clip_dir, tmp_path):
    import open_clip

    from zoo.training._augment import train_collate

    base = zoo.load(str(open_clip_dir), device="cpu")
    images, labels = _images(8)
    _, train_transform, _ = open_clip.create_model_and_transforms(f"local-dir:{open_clip_dir}")
    collate = train_collate(base.encoder, FinetuneConfig(output_dir=tmp_path, strategy="full", augment="weights"))
    _equal_draws(collate, train_transform, images, base.encoder.decode)
    with pytest.raises(zoo.ZooError, match="open_clip's train transform takes no auto_augment policy"):
        train_collate(base.encoder, FinetuneConfig(output_dir=tmp_path, augment="rand-m9-mstd0.5-inc1"))
    run = base.finetune((images, labels), strategy="full", augment="weights", epochs=1, batch_size=4,
                        output_dir=tmp_path / "run", progress=False)
    np.testing.assert_allclose(zoo.load(str(tmp_path / "run"), device="cpu").predict_proba(images),
                               run.model.predict_proba(images), atol=1e-5)


@pytest.mark.slow
def test_torchvision_augments_with_timms_transform_of_its_weights_data_config(tmp_path):
    import torchvision
    from timm.data import create_transform

    from zoo.training._augment import train_collate

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18-random.pth")
    base = zoo.load(_registered_torchvision(tmp_path), device="cpu")
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    theirs = create_transform(input_size=(3, 224, 224), mean=weights.mean, std=weights.std, interpolation="bilinear",
                              is_training=True)
    images, _ = _images(4)
    collate = train_collate(base.encoder, FinetuneConfig(output_dir=tmp_path, strategy="full", augment="weights"))
    _equal_draws(collate, theirs, images, base.encoder.decode)


def _registered_torchvision(folder) -> str:
    from zoo.catalog._plugin_manager import get_plugin_manager

    class Register:
        @zoo.hookimpl
        def zoo_register_models(self, register):
            register({"name": "tv-resnet18-random", "modality": "vision", "backend": "torchvision",
                      "backend_id": "resnet18.IMAGENET1K_V1", "embed_dim": 512, "sources": [{"path": str(folder)}],
                      "config": {"weights": "resnet18-random.pth"}})

    get_plugin_manager().register(Register())
    return "tv-resnet18-random"


def test_augmentation_and_mixup_are_refused_where_they_cannot_apply(tiny_bert_dir, tmp_path):
    text = zoo.load(str(tiny_bert_dir), device="cpu")
    with pytest.raises(zoo.ZooError, match="augment uses the train-time transform"):
        text.finetune((["a", "b"], ["x", "y"]), strategy="full", augment="weights", output_dir=tmp_path / "a")
    with pytest.raises(zoo.ZooError, match="a linear probe embeds them once"):
        text.finetune((["a", "b"], ["x", "y"]), mixup=0.8, output_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="mixup and cutmix mix a classifier's labels"):
        FinetuneConfig(output_dir=tmp_path, objective="contrastive", cutmix=1.0)


def test_texts_batch_by_length_within_runs_of_shuffled_rows(tiny_bert_dir, tmp_path, monkeypatch):
    """transformers' group_by_length order: each run of 50 batches sorted longest first, the same
    rows; on by default for a text classifier that trains its backbone, so its batches pad less."""
    from zoo.training import _loop
    from zoo.training._optim import LENGTH_GROUP, length_grouped

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, 230).tolist()
    order = rng.permutation(230).tolist()
    grouped = length_grouped(order, lengths, batch_size=2)
    assert sorted(grouped) == sorted(order)
    run = 2 * LENGTH_GROUP
    assert grouped[:run] == sorted(order[:run], key=lambda i: -lengths[i]) and grouped[run:2 * run] == sorted(
        order[run:2 * run], key=lambda i: -lengths[i])
    base = zoo.load(str(tiny_bert_dir), device="cpu")
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 40, 64)]
    labels = ["long" if len(t) > 100 else "short" for t in texts]
    spreads: list[int] = []
    real = _loop.train_collate

    def watched(encoder, config):
        collate = real(encoder, config)
        return lambda batch: (spreads.append(max(map(len, batch)) - min(map(len, batch))), collate(batch))[1]

    monkeypatch.setattr(_loop, "train_collate", watched)
    for grouped_run in (None, False):
        spreads.clear()
        base.finetune((texts, labels), output_dir=tmp_path / str(grouped_run), strategy="full", epochs=1,
                      batch_size=8, group_by_length=grouped_run, progress=False)
        if grouped_run is None:
            by_length = sum(spreads)
    assert by_length < sum(spreads) / 3  # batches of similar length: far less padding
    with pytest.raises(ValueError, match="contrastive batch's rows are each other's negatives"):
        FinetuneConfig(output_dir=tmp_path, objective="contrastive", group_by_length=True)
    with pytest.raises(zoo.ZooError, match="linear probe embeds them once"):
        base.finetune((texts, labels), output_dir=tmp_path / "p", group_by_length=True, progress=False)
