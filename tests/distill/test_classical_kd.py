"""Classical KD (kdzoo.distill.classical_kd): the loss against NumPy, the frozen teacher,
alpha=0 as plain CE training, and the errors a user can run into."""

import numpy as np
import pytest


def _net(width, classes=3, seed=0):
    """A tiny conv net with BatchNorm (its moving statistics show a teacher in train mode)."""
    import keras
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


def _data(n=16, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 1)).astype("float32"),
            rng.integers(0, classes, n).astype("int32"))


def _numpy_kd(labels, student, teacher, alpha, t):
    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    ce = -np.mean(log_softmax(student)[np.arange(len(labels)), labels])
    p_t = np.exp(log_softmax(teacher / t))
    kl = np.mean(np.sum(p_t * (np.log(p_t) - log_softmax(student / t)), -1))
    return (1 - alpha) * ce + alpha * t * t * kl, ce, t * t * kl


@pytest.mark.parametrize("alpha,t", [(0.3, 3.0), (0.7, 1.5), (1.0, 4.0)])
def test_the_kd_loss_matches_a_numpy_computation(alpha, t):
    from kdzoo.distill.classical_kd import kd_loss
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 32, 10)) * 3
    labels = rng.integers(0, 10, 32)
    got = [float(v) for v in kd_loss(labels, student.astype("float32"),
                                     teacher.astype("float32"), alpha, t)]
    np.testing.assert_allclose(got, _numpy_kd(labels, student, teacher, alpha, t), rtol=1e-5)


def test_the_model_trains_on_the_same_loss_it_reports():
    import keras
    from kdzoo.distill.classical_kd import KnowledgeDistillation
    x, y = _data()
    teacher, student = _net(4, seed=0), _net(2, seed=1)
    kd = KnowledgeDistillation(teacher, student, alpha=0.4, temperature=2.0)
    kd.compile(keras.optimizers.SGD(0.0))  # lr 0: the weights stay, the loss is exact
    logs = kd.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history
    expected = _numpy_kd(y, np.asarray(student(x, training=True)),
                         np.asarray(teacher(x, training=False)), 0.4, 2.0)
    np.testing.assert_allclose([logs["loss"][0], logs["ce"][0], logs["kd"][0]], expected,
                               rtol=1e-4)


def test_the_teacher_gets_no_gradient_and_is_unchanged_after_fit():
    import keras
    import tensorflow as tf
    from kdzoo.distill.classical_kd import KnowledgeDistillation
    x, y = _data()
    teacher, student = _net(4, seed=0), _net(2, seed=1)
    before_t = [np.array(w) for w in teacher.weights]   # BN moving stats included
    before_s = [np.array(w) for w in student.weights]
    kd = KnowledgeDistillation(teacher, student, alpha=0.9, temperature=3.0)
    kd.compile(keras.optimizers.SGD(0.5, momentum=0.9))
    teacher_ids = {id(v) for v in teacher.weights}
    assert not any(id(v) in teacher_ids for v in kd.trainable_variables)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([v.value for v in teacher.weights])
        loss, _, kd_term, _ = kd.compute_kd(x, y)
        logits = kd.teacher_logits(x)
    assert all(g is None for g in tape.gradient(kd_term, [v.value for v in teacher.weights]))
    assert all(g is None for g in tape.gradient(logits, [v.value for v in teacher.weights]))
    assert all(g is not None for g in tape.gradient(loss, student.trainable_variables))
    kd.fit(x, y, batch_size=4, epochs=3, verbose=0)
    for b, w in zip(before_t, teacher.weights):
        np.testing.assert_array_equal(b, np.array(w))
    assert any(not np.array_equal(b, np.array(w)) for b, w in zip(before_s, student.weights))


def test_alpha_zero_trains_exactly_as_plain_cross_entropy():
    import keras
    from kdzoo.distill.classical_kd import KnowledgeDistillation
    x, y = _data(n=24)
    plain, student = _net(3, seed=5), _net(3, seed=5)
    student.set_weights(plain.get_weights())
    plain.compile(keras.optimizers.SGD(0.2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kd = KnowledgeDistillation(_net(6, seed=9), student, alpha=0.0, temperature=3.0)
    kd.compile(keras.optimizers.SGD(0.2))
    want = plain.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history["loss"]
    got = kd.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(plain.weights, student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)


def test_a_teacher_from_a_keras_file_predicts_as_the_one_saved(tmp_path):
    from kdzoo.distill.classical_kd import KnowledgeDistillation
    x, _ = _data()
    teacher = _net(4, seed=3)
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    kd = KnowledgeDistillation(path, _net(2), alpha=0.3, temperature=3.0)
    np.testing.assert_allclose(np.array(kd.teacher_logits(x)),
                               np.array(teacher(x, training=False)), rtol=1e-5, atol=1e-6)
    assert not kd.teacher.trainable


def test_bad_teachers_and_settings_are_clear_errors(tmp_path):
    import keras
    from kdzoo.distill.classical_kd import KnowledgeDistillation
    with pytest.raises(FileNotFoundError, match="teacher=.*no such file"):
        KnowledgeDistillation(str(tmp_path / "missing.keras"), _net(2))
    with pytest.raises(ValueError, match="predicts 5 classes.*predicts 3"):
        KnowledgeDistillation(_net(2, classes=5), _net(2))
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\]"):
        KnowledgeDistillation(_net(2), _net(2), alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        KnowledgeDistillation(_net(2), _net(2), temperature=0)
    with pytest.raises(TypeError, match="teacher must be a keras.Model"):
        KnowledgeDistillation(42, _net(2))
    kd = KnowledgeDistillation(_net(2), _net(2))
    with pytest.raises(ValueError, match="do not pass loss="):
        kd.compile(keras.optimizers.SGD(0.1), loss="mse")


def test_the_runner_method_table_names_its_methods_and_checks_teacher():
    from kdzoo.train import SupervisedRun
    from kdzoo.train.methods import get_method

    def run(**kw):
        return SupervisedRun(dataset="fashion_mnist", model=None, optimizer=None,
                             workdir="/tmp/x", **kw)
    assert get_method(run(method="knowledge_distillation", teacher="t.keras")).uses_teacher
    with pytest.raises(ValueError, match="needs teacher="):
        get_method(run(method="knowledge_distillation"))
    with pytest.raises(ValueError, match="teacher= is only read by.*'labels'"):
        get_method(run(teacher="t.keras"))
    with pytest.raises(ValueError, match="method must be one of.*knowledge_distillation"):
        get_method(run(method="kd"))
