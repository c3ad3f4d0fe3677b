"""Checkpoints without the frozen teacher; stock callbacks with mode="auto" on the distillers.

Real ``fit`` runs of tiny models (16 px, a few thousand parameters).
Run: python -m pytest tests/distill/funmatch/test_callbacks.py -q
"""

import zipfile

import keras
import numpy as np
import pytest
from keras import ops

import kdzoo
from kdzoo.callbacks import StudentCheckpoint
from kdzoo.models.bit import build_bit
from helpers import smooth_images, tiny_convnet as tiny


def _student_weights_each_epoch(student):
    seen = []
    return seen, keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append([w.copy() for w in
                                                     student.get_weights()]))


@pytest.mark.slow
def test_funmatch_checkpoint_keeps_the_best_student_only_and_auto_mode_maximises(tmp_path):
    keras.utils.set_random_seed(0)
    teacher, student = tiny(name="teacher", seed=1, width=16), tiny(name="student", seed=2)
    d = kdzoo.FunMatchDistiller(teacher, student, image_size=16)
    d.compile(optimizer=keras.optimizers.Adam(3e-2))
    imgs = smooth_images(32, 20)
    val = (smooth_images(24, 16, seed=1), np.arange(24) % 5)
    path = str(tmp_path / "best_student.keras")
    best = StudentCheckpoint(path, monitor="val_agreement", save_best_only=True)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=50)
    stock = keras.callbacks.ModelCheckpoint(str(tmp_path / "stock.weights.h5"),
                                            monitor="val_accuracy", save_best_only=True,
                                            save_weights_only=True)
    seen, record = _student_weights_each_epoch(student)
    hist = d.fit(imgs, batch_size=8, epochs=5, verbose=0, validation_data=val,
                 callbacks=[record, best, stop, stock])
    for cb in (best, stop, stock):
        assert cb.monitor_op is ops.greater, cb  # "auto" chose to maximise
    assert "metric_directions" not in hist.history
    assert {"val_agreement", "val_accuracy", "val_loss"} <= set(hist.history)
    # The file is the student of the first epoch with the highest val_agreement.
    epoch = int(np.argmax(hist.history["val_agreement"]))
    saved = keras.saving.load_model(path)
    assert saved.count_params() == student.count_params()
    for got, want in zip(saved.get_weights(), seen[epoch]):
        np.testing.assert_array_equal(got, want)
    with zipfile.ZipFile(path) as z:
        assert "teacher" not in z.read("config.json").decode()
    whole = str(tmp_path / "distiller.keras")
    d.save(whole)  # what ModelCheckpoint writes: teacher included
    assert keras.saving.load_model(whole).teacher.count_params() == teacher.count_params()
    assert len(d.evaluate(*val, verbose=0)) == 4  # loss, agreement, accuracy, teacher
    with pytest.raises(ValueError, match="plain=True.*save_weights_only"):
        StudentCheckpoint(str(tmp_path / "s.weights.h5"), plain=True, save_weights_only=True)
    with pytest.raises(TypeError, match="no `student`.*ModelCheckpoint"):
        StudentCheckpoint(str(tmp_path / "x.keras")).set_model(tiny(name="no_student"))


@pytest.mark.slow  # a BiT student's fit, conversion and save: ~45 s on 2 shared cores
def test_plain_student_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    student = build_bit(50, 0.5, num_classes=5, input_shape=(16, 16, 3), units=(1, 1, 1, 1))
    d = kdzoo.FunMatchDistiller(tiny(name="t"), student, image_size=16)
    d.compile(optimizer="adam")
    path = str(tmp_path / "plain.keras")
    d.fit(smooth_images(16, 20), batch_size=8, epochs=1, verbose=0,
          callbacks=[StudentCheckpoint(path, plain=True)])
    with zipfile.ZipFile(path) as z:
        config = z.read("config.json").decode()
    assert "StandardizedConv2D" not in config and "kdzoo" not in config
    x = smooth_images(2, 16).astype("float32")
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0),
                               student.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow  # ~30 s on 2 shared cores
def test_self_distillation_metrics_have_directions():
    keras.utils.set_random_seed(0)
    sd = kdzoo.SelfDistillation(kdzoo.load("fmnist_cnn_w16", weights=None), num_classes=10)
    sd.compile(optimizer="adam")
    x = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32")
    y = np.arange(16) % 10
    up = keras.callbacks.EarlyStopping(monitor="val_ensemble_top1", patience=5)
    down = keras.callbacks.EarlyStopping(monitor="val_ce", patience=5)
    hist = sd.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y),
                  callbacks=[up, down])
    assert up.monitor_op is ops.greater and down.monitor_op is ops.less
    assert "metric_directions" not in hist.history and "val_ensemble_top1" in hist.history
