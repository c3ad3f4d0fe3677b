"""kdzoo's losses inside Keras' own ``keras.distillation.Distiller``.

References are written out in NumPy from the papers' formulas (not kdzoo's code).
"""

import keras
import numpy as np
import pytest

from kdzoo.distill import FunMatchLoss, SelfDistillationHint

RNG = np.random.default_rng(0)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl_t2(teacher, student, t):
    p, q = np_softmax(teacher / t), np_softmax(student / t)
    return t * t * np.sum(p * (np.log(p) - np.log(q)), -1)


def test_funmatch_loss_is_t2_kl_and_sums_an_ensemble():
    s = RNG.normal(size=(6, 5)).astype("float32")
    t1, t2 = (RNG.normal(size=(6, 5)).astype("float32") for _ in range(2))
    one = float(FunMatchLoss(temperature=3.0).compute_loss(t1, s))
    assert one == pytest.approx(np_kl_t2(t1, s, 3.0).mean(), rel=1e-5)
    summed = float(FunMatchLoss(temperature=3.0).compute_loss([t1, t2], s))
    assert summed == pytest.approx((np_kl_t2(t1, s, 3.0) + np_kl_t2(t2, s, 3.0)).mean(),
                                   rel=1e-5)
    mean = float(FunMatchLoss(temperature=3.0, ensemble="mean").compute_loss([t1, t2], s))
    p = (np_softmax(t1 / 3) + np_softmax(t2 / 3)) / 2
    ref = 9 * np.sum(p * (np.log(p) - np.log(np_softmax(s / 3))), -1).mean()
    assert mean == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        FunMatchLoss(temperature=0)
    with pytest.raises(ValueError, match="'sum'"):
        FunMatchLoss(ensemble="max")


def _net(name, classes=4, width=8):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(width, activation="relu", name="feat")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h), name=name)


def test_funmatch_loss_trains_a_student_in_keras_distiller():
    keras.utils.set_random_seed(0)
    teacher, student = _net("teacher"), _net("student")
    d = keras.distillation.Distiller(teacher, student, FunMatchLoss(temperature=2.0),
                                     student_loss_weight=0.0)
    d.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = RNG.normal(size=(64, 6)).astype("float32")
    y = np.zeros(64, "int64")
    before = np_kl_t2(teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0).mean()
    d.fit(x, y, epochs=30, batch_size=16, verbose=0)
    after = np_kl_t2(teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0).mean()
    assert after < 0.5 * before, (before, after)


def test_hint_forms_match_torch_dist_and_the_mean_square():
    a, b = RNG.normal(size=(4, 3, 3, 2)), RNG.normal(size=(4, 3, 3, 2))
    official = float(SelfDistillationHint("t", "s").compute_loss(b, a))
    assert official == pytest.approx(np.sqrt(np.sum((a - b) ** 2)), rel=1e-5)
    maps = float(SelfDistillationHint("t", "s", form="feature_maps").compute_loss(b, a))
    assert maps == pytest.approx(np.mean((a - b) ** 2), rel=1e-5)
    with pytest.raises(ValueError, match="form must be one of"):
        SelfDistillationHint("t", "s", form="l1")


def test_hint_between_named_layers_in_keras_distiller_and_adapter_message():
    keras.utils.set_random_seed(0)
    teacher, student = _net("teacher"), _net("student")
    hint = SelfDistillationHint("feat", "feat")
    d = keras.distillation.Distiller(teacher, student, hint, student_loss_weight=0.0)
    d.compile(optimizer=keras.optimizers.SGD(1e-2), loss="sparse_categorical_crossentropy")
    x = RNG.normal(size=(16, 6)).astype("float32")
    loss = float(d.compute_loss(x, np.zeros(16, "int64"), d(x)))
    tf_, sf = (keras.Model(m.inputs, m.get_layer("feat").output)(x) for m in (teacher, student))
    assert loss == pytest.approx(np.sqrt(np.sum((np.asarray(sf) - np.asarray(tf_)) ** 2)),
                                 rel=1e-5)
    narrow = keras.distillation.Distiller(teacher, _net("narrow", width=3),
                                          SelfDistillationHint("feat", "feat"),
                                          student_loss_weight=0.0)
    narrow.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="Add an adapter to the student"):
        narrow.compute_loss(x, np.zeros(16, "int64"), narrow(x))


def test_the_readme_distiller_block_runs_as_written():
    """The README's "kdzoo or keras.distillation.Distiller?" block, unchanged."""
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S)
              if "FunMatchLoss" in b]
    assert len(blocks) == 1, "README lost its FunMatchLoss block"
    code = "\n".join(line[2:] if line.startswith("  ") else line
                     for line in blocks[0].splitlines())
    inputs = keras.Input((6,))
    t = keras.layers.Dense(8, name="stage4")(inputs)
    teacher = keras.Model(inputs, keras.layers.Dense(4)(t))
    s_in = keras.Input((6,))
    h = keras.layers.Dense(5)(s_in)
    adapter = keras.layers.Dense(8, name="adapter")(h)
    # The adapter must sit in the student's graph for Keras' feature extractor.
    student = keras.Model(s_in, keras.layers.Add()([keras.layers.Dense(4)(h),
                                                    0.0 * keras.layers.Dense(4)(adapter)]))
    scope = {"keras": keras, "teacher": teacher, "student": student}
    exec(code, scope)  # noqa: S102  (our own README)
    kd = scope["kd"]
    kd.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = RNG.normal(size=(32, 6)).astype("float32")
    history = kd.fit(x, np.zeros(32, "int64"), epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
