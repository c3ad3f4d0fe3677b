"""kdzoo.SelfDistillation, exit ensembles and depth-adaptive inference."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras

from kdzoo.distill.self_distill import early_exit as ee
from kdzoo.distill.self_distill import exit_calibration as calib
from kdzoo.distill.self_distill import SelfDistillation, self_distillation_terms
from helpers import tiny_cifar_resnet


def tiny_backbone(channels=3, base_width=4):
    """The zoo's cifar_resnet18 (2 units per section, 32 px) at ``base_width``."""
    return tiny_cifar_resnet(base_width, blocks=(2, 2, 2, 2), input_shape=(32, 32, channels),
                             name="cifar_resnet18")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return SelfDistillation(tiny_backbone(), num_classes=10)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, (48, 32, 32, 3)).astype("float32")


# ----------------------------------------------------------------- numpy references

def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_ce(labels, z):
    return -np_log_softmax(z)[np.arange(len(labels)), labels].mean()


def np_kl(teacher, student, t):
    p = np.exp(np_log_softmax(teacher / t))
    return (t ** 2) * (p * (np.log(p) - np_log_softmax(student / t))).sum(-1).mean()


# ----------------------------------------------------------------- loss terms

def np_soft_ce(teacher, student, t):
    p = np.exp(np_log_softmax(teacher / t))
    return -(p * np_log_softmax(student / t)).sum(-1).mean()


def test_official_loss_terms_match_numpy():
    """Defaults = the authors' train.py: 0.3 * soft CE (no T**2) + 0.7 * CE for shallow
    exits, deepest plain CE, 0.03 * torch.dist(adapted pooled feature, deepest pooled)."""
    rng = np.random.RandomState(5)
    labels = np.array([3, 0, 1, 2, 1])
    logits = [rng.randn(5, 4) * 3 for _ in range(4)]
    feats = [rng.randn(5, 6), rng.randn(5, 6), None]  # exit 3: no hint (train.py l. 161)
    deep = rng.randn(5, 6)
    terms = self_distillation_terms(
        labels, [tf.constant(z, tf.float32) for z in logits],
        [None if f is None else tf.constant(f, tf.float32) for f in feats],
        tf.constant(deep, tf.float32))
    t = 3.0
    ce = np_ce(labels, logits[3]) + sum(0.7 * np_ce(labels, z) for z in logits[:3])
    kd = sum(0.3 * np_soft_ce(logits[3], z, t) for z in logits[:3])
    hint = sum(0.03 * np.sqrt(((f - deep) ** 2).sum()) for f in feats[:2])
    np.testing.assert_allclose(float(terms["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(terms["kl"]), kd, rtol=1e-5)
    np.testing.assert_allclose(float(terms["hint"]), hint, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), ce + kd + hint, rtol=1e-5)
    assert terms["hint_per_exit"][2] is None
    # The T**2 form weighs the KD term differently: T**2 * KL, not soft CE.
    t2 = self_distillation_terms(
        labels, [tf.constant(z, tf.float32) for z in logits],
        [None if f is None else tf.constant(f, tf.float32) for f in feats],
        tf.constant(deep, tf.float32), kd_scaling="t_squared")
    kd_t2 = sum(0.3 * np_kl(logits[3], z, t) for z in logits[:3])
    np.testing.assert_allclose(float(t2["kl"]), kd_t2, rtol=1e-5)
    assert abs(kd_t2 - kd) > 0.1
    # Sample weights: weighted means for CE/KD, weighted rows inside the norm.
    w = np.array([1.0, 0.0, 2.0, 1.0, 0.5])
    tw = self_distillation_terms(
        labels, [tf.constant(z, tf.float32) for z in logits],
        [None if f is None else tf.constant(f, tf.float32) for f in feats],
        tf.constant(deep, tf.float32), sample_weight=tf.constant(w, tf.float32))
    hint_w = sum(0.03 * np.sqrt((w[:, None] * (f - deep) ** 2).sum()) for f in feats[:2])
    np.testing.assert_allclose(float(tw["hint"]), hint_w, rtol=1e-5)
    ce_w = -(np_log_softmax(logits[3])[np.arange(5), labels] * w).sum() / w.sum()
    np.testing.assert_allclose(float(tw["ce_per_exit"][3]), ce_w, rtol=1e-5)


@pytest.mark.slow
def test_official_hint_wiring_in_the_model():
    """Adapters on exits 1 and 2 of 4 (not 3), applied to the pooled exit features; the
    target is the deepest pooled feature; recomputed here with NumPy from layer outputs."""
    keras.utils.set_random_seed(3)
    m = SelfDistillation(tiny_backbone(), num_classes=10)
    assert m.hint_exits == [1, 2]
    names = {layer.name for layer in m.network.layers}
    assert {"exit1_adapter", "exit2_adapter"} <= names and "exit3_adapter" not in names
    x = np.random.RandomState(6).randint(0, 256, (6, 32, 32, 3)).astype("float32")
    probe = keras.Model(m.network.inputs, [m.network.get_layer(n).output for n in
                                           ("exit1_pool", "exit2_pool", "stage4")])
    p1, p2, f4 = [np.asarray(v, np.float64) for v in probe(x, training=False)]
    target = f4.mean(axis=(1, 2))
    expected = 0.0
    for i, p in ((1, p1), (2, p2)):
        kernel, bias = [np.asarray(v) for v in m.network.get_layer(f"exit{i}_adapter").weights]
        expected += 0.03 * np.sqrt(((p @ kernel + bias - target) ** 2).sum())
    logits, feats, deep = m.forward_with_features(x, training=False)
    assert feats[2] is None
    terms = m.compute_terms(np.arange(6) % 10, logits, feats, deep)
    np.testing.assert_allclose(float(terms["hint"]), expected, rtol=1e-4)
    maps = SelfDistillation(tiny_backbone(), num_classes=10, hint="feature_maps")
    assert maps.hint_exits == [1, 2, 3]
    only3 = SelfDistillation(tiny_backbone(), num_classes=10, hint_exits=[3])
    assert only3.hint_exits == [3]
    with pytest.raises(ValueError, match="hint_exits must be distinct 1-based"):
        SelfDistillation(tiny_backbone(), num_classes=10, hint_exits=[4])
    with pytest.raises(ValueError, match="kd_scaling must be one of"):
        SelfDistillation(tiny_backbone(), num_classes=10, kd_scaling="t2")


def test_loss_terms_match_numpy():
    """The T**2 / feature-map options (kdzoo's former defaults)."""
    rng = np.random.RandomState(1)
    labels = np.array([0, 2, 1, 2])
    logits = [rng.randn(4, 3) * 2 for _ in range(3)]
    feats = [rng.randn(4, 2, 2, 5) for _ in range(2)]
    deep = rng.randn(4, 2, 2, 5)
    alpha, t, lam = 0.3, 3.0, 0.03
    terms = self_distillation_terms(
        labels, [tf.constant(z, tf.float32) for z in logits],
        [tf.constant(f, tf.float32) for f in feats], tf.constant(deep, tf.float32),
        alpha=alpha, temperature=t, feature_weight=lam, kd_scaling="t_squared",
        hint="feature_maps")
    ce = np_ce(labels, logits[2]) + sum((1 - alpha) * np_ce(labels, z) for z in logits[:2])
    kl = sum(alpha * np_kl(logits[2], z, t) for z in logits[:2])
    hint = sum(lam * np.mean((f - deep) ** 2) for f in feats)
    np.testing.assert_allclose(float(terms["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(terms["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(terms["hint"]), hint, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), ce + kl + hint, rtol=1e-5)
    assert kl > 0 and hint > 0

    ds = self_distillation_terms(
        labels, [tf.constant(z, tf.float32) for z in logits],
        [tf.constant(f, tf.float32) for f in feats], tf.constant(deep, tf.float32),
        mode="deep_supervision")
    np.testing.assert_allclose(float(ds["loss"]), sum(np_ce(labels, z) for z in logits),
                               rtol=1e-5)
    assert float(ds["kl"]) == 0 and float(ds["hint"]) == 0

    one_hot = np.eye(3)[labels]
    oh = self_distillation_terms(
        one_hot, [tf.constant(z, tf.float32) for z in logits],
        [tf.constant(f, tf.float32) for f in feats], tf.constant(deep, tf.float32),
        alpha=alpha, temperature=t, feature_weight=lam, kd_scaling="t_squared",
        hint="feature_maps")
    np.testing.assert_allclose(float(oh["loss"]), ce + kl + hint, rtol=1e-5)


def test_hint_target_and_teacher_get_no_gradient():
    rng = np.random.RandomState(2)
    shallow = [tf.Variable(rng.randn(3, 4), dtype=tf.float32)]
    teacher = tf.Variable(rng.randn(3, 4), dtype=tf.float32)
    feat = [tf.Variable(rng.randn(3, 2, 2, 6), dtype=tf.float32)]
    deep = tf.Variable(rng.randn(3, 2, 2, 6), dtype=tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        terms = self_distillation_terms([0, 1, 2], shallow + [teacher], feat, deep)
    g_deep, g_feat = tape.gradient(terms["hint"], [deep, feat[0]])
    assert g_deep is None or not np.any(g_deep.numpy())
    assert np.any(g_feat.numpy())
    g_teacher, g_student = tape.gradient(terms["kl"], [teacher, shallow[0]])
    assert g_teacher is None or not np.any(g_teacher.numpy())
    assert np.any(g_student.numpy())


def test_hint_does_not_train_the_deepest_section(model, images):
    # Variables of the last section (block4_*) only see the hint through its target.
    deep_vars = [v for layer in model.backbone.layers if layer.name.startswith("block4_")
                 for v in layer.trainable_variables]
    exit1_vars = model.network.get_layer("exit1_bottleneck_expand").trainable_variables
    assert deep_vars and exit1_vars
    with tf.GradientTape(persistent=True) as tape:
        logits, feats, deep = model.forward_with_features(images[:8], training=False)
        terms = model.compute_terms(np.arange(8) % 10, logits, feats, deep)
    for g in tape.gradient(terms["hint"], deep_vars):
        assert g is None or not np.any(g.numpy())
    assert any(np.any(g.numpy()) for g in tape.gradient(terms["hint"], exit1_vars))
    # ... while the CE of the deepest exit does reach them.
    assert any(g is not None and np.any(g.numpy())
               for g in tape.gradient(terms["ce"], deep_vars))


# ----------------------------------------------------------------- model

def test_exits_shapes_and_ensemble_metric(model, images):
    assert model.exit_names == ["stage1", "stage2", "stage3", "stage4"]
    logits, feats, deep = model.forward_with_features(images[:4])
    assert [tuple(z.shape) for z in logits] == [(4, 10)] * 4
    # the official hint: adapted pooled features of exits 1 and 2, the deepest pooled
    assert [None if f is None else tuple(f.shape) for f in feats] == [(4, 32), (4, 32), None]
    assert tuple(deep.shape) == (4, 32)
    labels = np.random.RandomState(3).randint(0, 10, len(images))
    model.compile(optimizer="adam")
    result = model.evaluate(images, labels, batch_size=16, verbose=0, return_dict=True)
    outs = [np.asarray(z) for z in model.predict(images, batch_size=16, verbose=0)]
    for i, z in enumerate(outs, start=1):
        assert result[f"exit{i}_top1"] == pytest.approx(np.mean(z.argmax(-1) == labels))
    ensemble = np.mean(outs, axis=0)
    assert result["ensemble_top1"] == pytest.approx(np.mean(ensemble.argmax(-1) == labels))
    np.testing.assert_allclose(SelfDistillation.ensemble(outs), ensemble, rtol=1e-6)
    for key in ("loss", "ce", "kl", "hint"):
        assert key in result


@pytest.mark.slow
def test_fit_updates_weights_and_keras_round_trip(tmp_path, images):
    keras.utils.set_random_seed(1)
    m = SelfDistillation(tiny_backbone(), num_classes=10, alpha=0.5, temperature=2.0,
                         feature_weight=0.1, mode="deep_supervision")
    assert [x.name for x in m.metrics][:2] == ["loss", "ce"]
    labels = np.random.RandomState(4).randint(0, 10, len(images))
    m.compile(optimizer=keras.optimizers.SGD(0.05))
    before = [w.numpy().copy() for w in m.trainable_weights]
    history = m.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert "ensemble_top1" in history.history and "kl" not in history.history
    assert all(np.any(a != w.numpy()) for a, w in zip(before, m.trainable_weights)
               if a.size > 1 and w.name == "kernel")
    path = str(tmp_path / "sd.keras")
    m.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again, SelfDistillation)
    assert (again.mode, again.alpha, again.temperature, again.feature_weight) == (
        "deep_supervision", 0.5, 2.0, 0.1)
    for a, b in zip(m.predict(images[:8], verbose=0), again.predict(images[:8], verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_learns_fashion_mnist():
    from kdzoo.data import fashion_mnist
    try:
        x_train, y_train = fashion_mnist.load("train")
        x_test, y_test = fashion_mnist.load("test")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    pad = ((0, 0), (2, 2), (2, 2), (0, 0))
    x_train = np.pad(x_train[:3072], pad).astype("float32")
    x_test = np.pad(x_test[:1000], pad).astype("float32")
    keras.utils.set_random_seed(0)
    m = SelfDistillation(tiny_backbone(channels=1, base_width=8), num_classes=10)
    m.compile(optimizer=keras.optimizers.Adam(3e-3))
    m.fit(x_train, y_train[:3072], batch_size=64, epochs=1, verbose=0, shuffle=False)
    result = m.evaluate(x_test, y_test[:1000], batch_size=250, verbose=0, return_dict=True)
    # chance is 0.10; one 3k-image epoch gives ~0.58-0.76 per exit, ~0.75 ensemble
    for i in range(1, 5):
        assert result[f"exit{i}_top1"] > 0.4, result
    assert result["ensemble_top1"] > 0.6, result


def test_contract_with_kdzoo_load():
    import kdzoo
    backbone = kdzoo.load("cifar_resnet18", weights=None, num_classes=100)
    m = kdzoo.SelfDistillation(backbone, num_classes=100, exits=None, alpha=0.3,
                               temperature=3.0, feature_weight=0.03, mode="self_distillation")
    assert m.exit_names == ["stage1", "stage2", "stage3", "stage4"]
    assert [tuple(t.shape) for t in m.network.outputs] == (
        [(None, 100)] * 4 + [(None, 512)] * 3)  # 2 adapted exit features + the target
    assert m.network.outputs[3] is backbone.output  # the deepest exit is the backbone's head
    keras.backend.clear_session()


def test_keras_applications_backbone_by_layer_names():
    backbone = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3),
                                           classes=10)
    exits = ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]
    m = SelfDistillation(backbone, num_classes=10, exits=exits, bottleneck_ratio=16)
    logits = m(np.zeros((1, 64, 64, 3), "float32"))
    assert len(logits) == 4 and all(tuple(z.shape) == (1, 10) for z in logits)
    assert m.network.get_layer("exit4_classifier").units == 10


# ----------------------------------------------------------------- bad input

def test_bad_input_errors(model, images):
    with pytest.raises(ValueError, match="Did you mean 'stage2'"):
        SelfDistillation(model.backbone, num_classes=10, exits=["stage1", "stag2"])
    with pytest.raises(ValueError, match="num_classes mismatch"):
        SelfDistillation(model.backbone, num_classes=100)
    with pytest.raises(ValueError, match="mode"):
        SelfDistillation(model.backbone, num_classes=10, mode="distill")
    with pytest.raises(ValueError, match="no stage-output layers"):
        SelfDistillation(keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3),
                                                        alpha=0.35), num_classes=10)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ee.EarlyExit(model, [0.5, 1.5, 0.5])
    with pytest.raises(ValueError, match="Expected 3 thresholds"):
        ee.EarlyExit(model, [0.5, 0.5])
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(images[:8], batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="exactly one"):
        calib.calibrate_thresholds(model, images, np.zeros(len(images)))
    with pytest.raises(ValueError, match="Exit index"):
        ee.export_exit(model, 0)


# ----------------------------------------------------------------- early exit

@pytest.mark.slow
def test_early_exit_skips_compute_for_confident_rows(model, images):
    full = [np.asarray(z) for z in model.predict(images, verbose=0)]
    conf1 = np.exp(np_log_softmax(full[0].astype("float64"))).max(-1)
    t1 = float(np.median(conf1))
    runner = ee.EarlyExit(model, [t1, 1.0, 0.0])
    # Count the rows each section really receives, independently of the runner's own stats.
    counters = [tf.Variable(0, dtype=tf.int64) for _ in runner.sections]
    for k, section in enumerate(list(runner.sections)):
        def counted(x, training=False, _k=k, _s=section):
            counters[_k].assign_add(tf.cast(tf.shape(x)[0], tf.int64))
            return _s(x, training=training)
        runner.sections[k] = counted
    out = runner(images)
    undecided = int(np.sum(conf1 <= t1))
    expected = [len(images), undecided, undecided, 0]  # exit 3 takes every row left
    assert 0 < undecided < len(images)
    assert [int(c.numpy()) for c in counters] == expected
    assert list(out["section_rows"].numpy()) == expected
    exits = out["exit"].numpy()
    np.testing.assert_array_equal(exits, np.where(conf1 > t1, 1, 3))
    logits = out["logits"].numpy()
    np.testing.assert_allclose(logits[exits == 1], full[0][exits == 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits[exits == 3], full[2][exits == 3], rtol=1e-4, atol=1e-5)
    preds, sim_exits = calib.simulate(full, [t1, 1.0, 0.0])
    np.testing.assert_array_equal(sim_exits, exits)

    stats = runner.predict(images, batch_size=16)
    assert stats["avg_sections"] == pytest.approx(np.mean(exits))
    to_exit = runner.flops["to_exit"]
    assert stats["avg_flops"] == pytest.approx(np.mean([to_exit[e - 1] for e in exits]))
    assert stats["avg_flops"] < runner.flops["full"]


def test_flops_counting_is_exact_for_known_layers():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", groups=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)
    model = keras.Model(inp, out)
    assert ee.count_flops(model) == 2 * (8 * 8 * 9 * 3 * 4 + 4 * 4 * 9 * 2 * 6 + 6 * 5)


def test_calibration_for_accuracy_and_budget(model, images):
    full = [np.asarray(z) for z in model.predict(images, verbose=0)]
    labels = full[-1].argmax(-1)  # the deepest exit is right by construction
    cal = calib.calibrate_thresholds(model, images, labels, target_accuracy=1.0)
    assert cal["met"] and cal["accuracy"] == 1.0
    preds, _ = calib.simulate(full, cal["thresholds"])
    assert np.mean(preds == labels) == 1.0
    flops = ee.exit_flops(model)
    budget = calib.calibrate_thresholds(model, images, labels, max_flops_fraction=0.6)
    assert budget["met"] and budget["avg_flops"] <= 0.6 * flops["full"]
    assert len(budget["thresholds"]) == 3
    assert all(0.0 <= t <= 1.0 for t in budget["thresholds"])


def test_loss_bound_calibration_keeps_the_upper_confidence_bound_within_max_loss(model,
                                                                              images):
    full = [np.asarray(z) for z in model.predict(images, verbose=0)]
    labels = full[-1].argmax(-1)  # the deepest exit is right on every image
    plain = calib.calibrate_thresholds(model, images, labels, max_loss=0.1)
    bounded = calib.calibrate_thresholds(model, images, labels, max_loss=0.1, confidence=0.9)
    for result in (plain, bounded):
        preds, _ = calib.simulate(full, result["thresholds"])
        wrong = (preds != labels).astype(np.float64)
        assert result["met"] and result["loss"] == pytest.approx(wrong.mean())
    # by hand: z(0.9) = 1.2815516; bound = mean + z * sample std / sqrt(n)
    expected = wrong.mean() + 1.2815516 * wrong.std(ddof=1) / np.sqrt(len(wrong))
    assert bounded["loss_bound"] == pytest.approx(expected, rel=1e-6)
    assert bounded["loss_bound"] <= 0.1 and plain["loss"] <= 0.1
    assert plain["loss_bound"] == plain["loss"]  # no confidence: no margin
    assert bounded["thresholds"][0] >= plain["thresholds"][0]  # the margin only costs


def test_accuracy_target_skips_a_spike_of_calibration_noise():
    # accuracy against threshold dips below the target at 0.4 and touches it at 0.2
    acc = {0.0: 0.80, 0.2: 0.86, 0.4: 0.84, 0.6: 0.86, 0.8: 0.87, 1.0: 0.87}
    table = [{"threshold": t, "accuracy": a, "avg_flops": 10 + 100 * t}
             for t, a in acc.items()]
    row, met = calib.choose_for_accuracy(table, 0.855)
    assert met and row["threshold"] == 0.6  # the lowest with no dip above it
    row, met = calib.choose_for_accuracy(table, 0.855, stable=False)
    assert met and row["threshold"] == 0.2  # the cheapest that touches the target
    row, met = calib.choose_for_accuracy(table, 0.9)
    assert not met and row["threshold"] == 0.8  # most accurate, then cheapest


# ----------------------------------------------------------------- export

@pytest.mark.slow
def test_exported_exit_matches_and_saves(model, images, tmp_path):
    full = model.predict(images[:8], verbose=0)
    exported = model.export_exit(2)
    names = {layer.name for layer in exported.layers}
    assert "exit2_classifier" in names
    assert not any(n.startswith(("block3_", "block4_", "exit1_", "exit3_")) for n in names)
    np.testing.assert_allclose(exported.predict(images[:8], verbose=0), full[1],
                               rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "exit2.keras")
    exported.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(images[:8], verbose=0), full[1],
                               rtol=1e-5, atol=1e-6)
    saved = str(tmp_path / "exit2_savedmodel")
    exported.export(saved, verbose=False)
    served = tf.saved_model.load(saved)
    np.testing.assert_allclose(served.serve(tf.constant(images[:8])).numpy(), full[1],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_conversion_matches(model, images):
    exported = model.export_exit(1)
    flatbuffer = ee.to_tflite(exported)
    assert len(flatbuffer) > 1000
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [4, 32, 32, 3])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images[:4])
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, exported.predict(images[:4], verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_no_prints_in_library():
    import kdzoo.distill.self_distill.early_exit as a
    import kdzoo.distill.self_distill.distiller as b
    for module in (a, b):
        with open(module.__file__) as f:
            assert "print(" not in f.read()


@pytest.mark.slow
@pytest.mark.parametrize("onednn", ["1", "0"])
def test_early_exit_with_empty_deeper_sections(onednn):
    """Thresholds that empty every deeper section must not launch (or crash) them.

    oneDNN's Conv2D/BatchNormalization fail on a batch of 0 rows; run with it on and off
    in a fresh process each, on a zoo CIFAR net and the Fashion-MNIST net.
    """
    import json
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(__file__), "scripts", "early_exit_empty_sections.py")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {r["arch"] for r in results} == {"cifar_resnet18", "fmnist_cnn_w16"}
    for r in results:
        n = len(r["section_rows"])
        if r.get("mixed"):
            assert r["section_rows"] == [1, 1] + [0] * (n - 2), r
            assert r["exits"] == [2], r
        else:
            assert r["section_rows"] == [r["batch"]] + [0] * (n - 1), r
            assert r["exits"] == [1] * r["batch"], r
        assert r["max_abs_diff"] < 1e-4, r


# ----------------------------------------------------------------- PyTorch-style SGD

def test_torch_sgd_matches_a_hand_computed_pytorch_update():
    """Two steps of torch.optim.SGD(lr, momentum=0.9, weight_decay=5e-4) by hand:
    g = grad + wd * w; buf = momentum * buf + g (buf = g first); w -= lr * buf."""
    from kdzoo.optim.torch_sgd import TorchSGD
    rng = np.random.RandomState(7)
    x, y = rng.randn(8, 3), rng.randn(8, 2)
    w0, b0 = rng.randn(3, 2), rng.randn(2)
    lr, mom, wd = 0.1, 0.9, 5e-4

    def grads(w, b):  # d/dw, d/db of mean((x w + b - y)**2) over all 16 entries
        r = x @ w + b - y
        return 2 * x.T @ r / r.size, 2 * r.sum(0) / r.size

    w, b, buf_w, buf_b = w0.copy(), b0.copy(), None, None
    for _ in range(2):
        gw, gb = grads(w, b)
        gw, gb = gw + wd * w, gb + wd * b
        buf_w = gw if buf_w is None else mom * buf_w + gw
        buf_b = gb if buf_b is None else mom * buf_b + gb
        w, b = w - lr * buf_w, b - lr * buf_b

    def run(optimizer):
        kw = tf.Variable(w0, dtype=tf.float64)
        kb = tf.Variable(b0, dtype=tf.float64)
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((tf.constant(x) @ kw + kb - tf.constant(y)) ** 2)
            optimizer.apply(tape.gradient(loss, [kw, kb]), [kw, kb])
        return kw.numpy(), kb.numpy()

    got_w, got_b = run(TorchSGD(lr, momentum=mom, weight_decay=wd))
    np.testing.assert_allclose(got_w, w, rtol=1e-7, atol=1e-9)  # lr is a float32
    np.testing.assert_allclose(got_b, b, rtol=1e-7, atol=1e-9)
    # Keras' own SGD(weight_decay) is decoupled: a different update.
    keras_w, _ = run(keras.optimizers.SGD(lr, momentum=mom, weight_decay=wd))
    assert np.abs(keras_w - w).max() > 1e-6
    again = TorchSGD.from_config(TorchSGD(0.2, momentum=0.5, weight_decay=1e-3).get_config())
    assert (again.momentum, again.coupled_weight_decay) == (0.5, 1e-3)


def test_official_schedule_is_train_py_epoch_loop():
    from kdzoo.optim.torch_sgd import official_schedule
    spe = 3
    schedule = official_schedule(spe, epochs=250, learning_rate=0.1)
    # train.py: lr /= 10 at the start of epochs 250 // 3 = 83, 500 // 3 = 166, 240
    expected = {0: 0.1, 82: 0.1, 83: 0.01, 165: 0.01, 166: 1e-3, 239: 1e-3, 240: 1e-4,
                249: 1e-4}
    for epoch, lr in expected.items():
        for step in (epoch * spe, epoch * spe + spe - 1):
            assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), (epoch, step)


# ----------------------------------------------------------------- light exit heads

@pytest.mark.slow
def test_light_heads_are_cheap_and_early_exit_matches_the_exits(images):
    """head="light": average pool to the deepest size + 1x1 conv (counted by hand), far
    cheaper than the paper's bottleneck; EarlyExit still returns each exit's logits."""
    keras.utils.set_random_seed(4)
    light = SelfDistillation(tiny_backbone(), num_classes=10, head="light")
    paper = SelfDistillation(tiny_backbone(), num_classes=10)
    lf, pf = ee.exit_flops(light), ee.exit_flops(paper)
    assert lf["sections"] == pf["sections"] and lf["full"] == pf["full"]
    # exit k (k = 1, 2, 3): 4x4 positions x C_k x 32 (1x1 conv) + 32 x 10 (classifier)
    for k, c in enumerate((4, 8, 16)):
        assert lf["heads"][k] == 2 * (16 * c * 32 + 32 * 10)
    assert sum(lf["heads"][:3]) < 0.2 * sum(pf["heads"][:3])
    full = [np.asarray(z) for z in light.predict(images, verbose=0)]
    conf1 = np.exp(np_log_softmax(full[0].astype("float64"))).max(-1)
    t1 = float(np.median(conf1))
    out = ee.EarlyExit(light, [t1, 1.0, 1.0])(images)
    exits = out["exit"].numpy()
    np.testing.assert_array_equal(exits, np.where(conf1 > t1, 1, 4))
    for e in (1, 4):
        np.testing.assert_allclose(out["logits"].numpy()[exits == e], full[e - 1][exits == e],
                                   rtol=1e-4, atol=1e-5)
    # fmnist's 28 -> 14 -> 7 -> 4 sizes: "same" pooling
    import kdzoo
    fm = SelfDistillation(kdzoo.load("fmnist_cnn_w16", weights=None, num_classes=10),
                          num_classes=10, head="light")
    assert [tuple(fm.network.get_layer(f"exit{i}_light_expand_relu").output.shape)
            for i in (1, 2)] == [(None, 4, 4, 64)] * 2


# ----------------------------------------------------------------- versions (issue 28)

def test_conference_hint_is_squared_l2_of_pooled_features():
    """hint="conference": |f_i - f_N|^2 (train.py 133-134's comment), row sum, batch mean."""
    rng = np.random.RandomState(8)
    labels = np.array([1, 0, 2])
    logits = [tf.constant(rng.randn(3, 4), tf.float32) for _ in range(3)]
    feats = [rng.randn(3, 5), rng.randn(3, 5)]
    deep = rng.randn(3, 5)
    terms = self_distillation_terms(labels, logits, [tf.constant(f, tf.float32) for f in feats],
                                    tf.constant(deep, tf.float32), hint="conference")
    want = sum(0.03 * ((f - deep) ** 2).sum(axis=1).mean() for f in feats)
    np.testing.assert_allclose(float(terms["hint"]), want, rtol=1e-5)
    w = np.array([2.0, 0.0, 1.0])
    tw = self_distillation_terms(labels, logits, [tf.constant(f, tf.float32) for f in feats],
                                 tf.constant(deep, tf.float32), hint="conference",
                                 sample_weight=tf.constant(w, tf.float32))
    want_w = sum(0.03 * (((f - deep) ** 2).sum(axis=1) * w).sum() / w.sum() for f in feats)
    np.testing.assert_allclose(float(tw["hint"]), want_w, rtol=1e-5)


@pytest.mark.slow
def test_version_switch_sets_heads_hint_data_and_schedule_together():
    from kdzoo.distill.self_distill import byot_versions
    journal = SelfDistillation(tiny_backbone(), num_classes=10, version="journal")
    assert (journal.head, journal.hint, journal.hint_exits) == ("official", "official", [1, 2])
    names = {layer.name for layer in journal.network.layers}
    assert "exit1_official_attention_gate" in names and "exit2_adapter" in names
    conf = SelfDistillation(tiny_backbone(), num_classes=10, version="iccv2019")
    assert (conf.head, conf.hint, conf.hint_exits) == ("bottleneck", "conference", [1, 2, 3])
    assert not any(layer.name.endswith("_adapter") for layer in conf.network.layers)
    _, feats, deep = conf.forward_with_features(np.zeros((2, 32, 32, 3), "float32"))
    assert [tuple(f.shape) for f in feats] == [(2, 32)] * 3 and tuple(deep.shape) == (2, 32)
    again = SelfDistillation.from_config(conf.get_config())
    assert (again.version, again.head, again.hint) == ("iccv2019", "bottleneck", "conference")
    with pytest.raises(ValueError, match="contradicts version='journal'"):
        SelfDistillation(tiny_backbone(), num_classes=10, version="journal", head="light")
    with pytest.raises(ValueError, match="version must be one of"):
        SelfDistillation(tiny_backbone(), num_classes=10, version="cvpr")
    # train.py: --epoch 250 (l. 17), --batchsize 128 (23), --init_lr 0.1 (24), SGD
    # momentum 0.9 / weight decay 5e-4 (109); crop pad 4 fill 128 + flip (35-36, 40-41);
    # --autoaugment True adds CIFAR10Policy + Cutout(1, 16) (21, 36-37).
    j, c = byot_versions.run_settings("journal"), byot_versions.run_settings("iccv2019")
    for s in (j, c):
        assert (s["epochs"], s["batch_size"], s["learning_rate"], s["momentum"],
                s["weight_decay"]) == (250, 128, 0.1, 0.9, 5e-4)
        assert (s["crop"], s["pad_fill"], s["flip"]) == ("pad", 128, True)
    assert (j["autoaugment"], j["cutout"]) == ("cifar10", 16)
    assert (c["autoaugment"], c["cutout"]) == (None, None)
    assert set(byot_versions.SOURCES) == set(byot_versions.VERSIONS)


# ----------------------------------------------------------------- best / last reporting

class _ScriptedModel:
    """Stands in for a model: evaluate returns scripted ensemble/exit accuracies."""

    def __init__(self, script):
        self.script, self.saved = script, []
        self.optimizer = type("Opt", (), {"iterations": 0})()

    def evaluate(self, data, return_dict=True, verbose=0):
        acc = self.script[data].pop(0)
        return {"loss": 1.0, "exit1_top1": acc - 0.1, "exit2_top1": acc - 0.05,
                "ensemble_top1": acc}

    def save_weights(self, path):
        with open(path, "w") as f:
            f.write(str(self.optimizer.iterations))
        self.saved.append(self.optimizer.iterations)


def test_exit_report_selects_best_on_heldout_and_labels_the_test_selected_best(tmp_path):
    """train.py 203-208 keeps the best *test* ensemble accuracy; the report's best_epoch
    is chosen on the held-out split, the test-selected figure is kept but labelled."""
    import json
    from kdzoo.distill.self_distill.exit_reporting import ExitAccuracyReport
    path = str(tmp_path / "exit_accuracy.json")
    # epoch:        1     2     3
    script = {"val": [0.60, 0.55, 0.58], "test": [0.50, 0.70, 0.52]}
    model = _ScriptedModel(script)
    cb = ExitAccuracyReport("val", "test", path, best_weights=str(tmp_path / "b.weights.h5"))
    cb.set_model(model)
    cb.on_train_begin()
    for epoch in range(3):
        model.optimizer.iterations = 10 * (epoch + 1)
        cb.on_epoch_end(epoch)
    report = json.load(open(path))
    assert report["last_epoch"]["epoch"] == 3 and report["last_epoch"]["test"]["ensemble"] == 0.52
    assert report["best_epoch"]["epoch"] == 1 and report["best_epoch"]["minival"]["ensemble"] == 0.6
    assert report["best_epoch"]["test"]["ensemble"] == 0.5      # test at the chosen epoch
    assert report["best_epoch"]["step"] == 10
    assert report["best_epoch"]["test"]["exit1"] == pytest.approx(0.4)
    assert report["test_selected_best"]["epoch"] == 2
    assert report["test_selected_best"]["test"]["ensemble"] == 0.7
    assert "TEST set" in report["test_selected_best"]["note"]
    assert model.saved == [10]                                   # best weights: epoch 1 only
    # A resumed run (restored at epoch 2) reloads the file and drops epochs 2 and 3.
    model2 = _ScriptedModel({"val": [0.65], "test": [0.40]})
    cb2 = ExitAccuracyReport("val", "test", path)
    cb2.set_model(model2)
    cb2.on_train_begin()
    cb2.on_epoch_end(1)
    again = json.load(open(path))
    assert [h["epoch"] for h in again["per_epoch"]] == [1, 2]
    assert again["best_epoch"]["epoch"] == 2 and again["test_selected_best"]["epoch"] == 1
    with pytest.raises(ValueError, match="never chosen on the test set"):
        ExitAccuracyReport(None, "test", path)


@pytest.mark.slow
def test_exit_report_reads_every_exit_of_a_real_model(images, tmp_path):
    """Inside model.fit (evaluate nested in on_epoch_end), with a real SelfDistillation."""
    import json
    from kdzoo.distill.self_distill.exit_reporting import (ExitAccuracyReport, _accuracies,
                                                           callbacks_for)
    model = SelfDistillation(tiny_backbone(), num_classes=10)
    model.compile(optimizer="sgd")
    labels = np.arange(len(images)) % 10
    acc = _accuracies(model.evaluate(images, labels, batch_size=16, return_dict=True,
                                     verbose=0))
    assert sorted(acc) == ["ensemble", "exit1", "exit2", "exit3", "exit4"]
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    assert callbacks_for(keras.Sequential([keras.layers.Dense(2)]), None, None, 32) == []
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    path = str(tmp_path / "r.json")
    model.fit(data, epochs=2, verbose=0, callbacks=[ExitAccuracyReport(data.take(1), data, path)])
    report = json.load(open(path))
    assert [(h["epoch"], h["step"]) for h in report["per_epoch"]] == [(1, 3), (2, 6)]
    assert sorted(report["last_epoch"]["test"]) == sorted(acc)
