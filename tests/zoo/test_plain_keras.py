"""kdzoo.to_plain_keras: zoo models as stock Keras layers, loadable without kdzoo.

The reference outputs are the kdzoo models' own (which compute weight
standardisation on the fly); the converted models are loaded back in a fresh
process that imports only keras and numpy and where ``import kdzoo`` fails.
Run: python -m pytest tests/zoo/test_plain_keras.py -q
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdzoo
from kdzoo.distill.self_distill.early_exit import to_tflite
from kdzoo.models.bit import StandardizedConv2D, tiny_bit as smoke_bit
from kdzoo.models.cifar_pyramidnet import cifar_pyramidnet
from kdzoo.zoo.plain_keras import custom_layers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(0)


def images(n, size, channels=3):
    return RNG.uniform(0, 255, (n, size, size, channels)).astype("float32")


def randomize_batchnorm(model):
    """Non-trivial moving statistics, so a converter that dropped them would show."""
    for layer in model._flatten_layers(recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(RNG.normal(0, 0.2, layer.moving_mean.shape))
            layer.moving_variance.assign(RNG.uniform(0.5, 2.0, layer.moving_variance.shape))


def tiny_bit(size=32, classes=10):
    keras.utils.set_random_seed(1)
    model = smoke_bit(classes, (size, size, 3))
    # Kernels far from standardised (mean 0.3, std 2): folding must really change them.
    for layer in model.layers:
        if isinstance(layer, StandardizedConv2D):
            layer.kernel.assign(RNG.normal(0.3, 2.0, layer.kernel.shape))
    head = model.get_layer("head")
    head.kernel.assign(RNG.normal(0, 0.3, head.kernel.shape))
    return model


def tiny_pyramidnet():
    keras.utils.set_random_seed(2)
    model = cifar_pyramidnet(depth=11, alpha=24, num_classes=10, name="tiny_pyramidnet")
    randomize_batchnorm(model)
    return model


def standardize_by_hand(w, eps):
    """(w - mean) / sqrt(var + eps) over (H, W, in), one output channel at a time."""
    out = np.empty_like(w, dtype=np.float64)
    for o in range(w.shape[-1]):
        k = w[..., o].astype(np.float64)
        out[..., o] = (k - k.mean()) / np.sqrt(((k - k.mean()) ** 2).mean() + eps)
    return out


def test_bit_convs_fold_into_plain_conv2d_kernels():
    model = tiny_bit()
    plain = kdzoo.to_plain_keras(model)
    assert custom_layers(model) and not custom_layers(plain)
    conv = model.get_layer("block2_unit01_b_conv")
    folded = plain.get_layer("block2_unit01_b_conv")
    assert type(folded) is keras.layers.Conv2D
    assert folded.strides == conv.strides and folded.padding == conv.padding
    np.testing.assert_allclose(folded.kernel.numpy(),
                               standardize_by_hand(conv.kernel.numpy(), conv.ws_epsilon),
                               rtol=1e-5, atol=1e-6)
    x = images(4, 32)
    ref = model.predict(x, verbose=0)
    np.testing.assert_allclose(plain.predict(x, verbose=0), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    # Independent copy: converting does not alias the original's variables.
    folded.kernel.assign(np.zeros(folded.kernel.shape))
    assert np.abs(conv.kernel.numpy()).max() > 0


def test_pyramidnet_zero_pad_becomes_zero_padding_layer():
    model = tiny_pyramidnet()
    assert any(cls == "ChannelZeroPad" for _, cls in custom_layers(model))
    plain = kdzoo.to_plain_keras(model)
    assert not custom_layers(plain)
    x = images(3, 32)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_funmatch_student_and_mixed_precision_policy_are_kept():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        student = tiny_bit(size=16)
        teacher = tiny_bit(size=16)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    float32_twin = tiny_bit(size=16)
    float32_twin.set_weights(student.get_weights())
    d = kdzoo.FunMatchDistiller(teacher, student, image_size=16)
    plain = kdzoo.to_plain_keras(d)  # a distiller gives its student, never the teacher
    assert plain.count_params() == student.count_params()
    assert plain.get_layer("root_conv").dtype_policy.name == "mixed_bfloat16"
    x = images(8, 16)
    exact = float32_twin.predict(x, verbose=0)
    scale = np.abs(exact).max()
    err_student = np.abs(student.predict(x, verbose=0).astype("float32") - exact).max()
    err_plain = np.abs(plain.predict(x, verbose=0).astype("float32") - exact).max()
    # bf16 activations carry ~3 significant digits: the folded model must be as close
    # to the exact float32 function as the original bf16 student is, not closer to it.
    assert err_plain <= 1.5 * err_student + 0.01 * scale, (err_plain, err_student, scale)


@pytest.mark.parametrize("make", [
    lambda t, s: kdzoo.KnowledgeDistillation(t, s, alpha=0.5, temperature=2.0),
    lambda t, s: kdzoo.FunMatchDistiller(t, s, image_size=32)], ids=["kd", "funmatch"])
def test_a_distiller_exports_its_student_never_its_teacher(make):
    student, teacher = tiny_bit(), tiny_pyramidnet()
    plain = kdzoo.to_plain_keras(make(teacher, student))
    assert custom_layers(plain) == []
    x = images(4, 32)
    want = student.predict(x, verbose=0)
    got = plain.predict(x, verbose=0)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale
    # the teacher's logits are far from the student's: exporting it would show
    assert np.abs(teacher.predict(x, verbose=0) - want).max() > 0.1 * scale


def test_any_model_names_its_deployable_network_by_export_network():
    """A new method's model answers in its own class; to_plain_keras has no list of them."""
    net = tiny_pyramidnet()

    class Wrapper(keras.Model):
        def call(self, x):
            return net(x)

        def export_network(self):
            return net

    x = images(3, 32)
    plain = kdzoo.to_plain_keras(Wrapper(), name="from_wrapper")
    assert plain.name == "from_wrapper" and custom_layers(plain) == []
    np.testing.assert_allclose(plain.predict(x, verbose=0), net.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_refuses_what_it_cannot_make_plain():
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((4,))
    custom = keras.Model(inputs, Scale(name="my_scale")(inputs))
    with pytest.raises(ValueError, match="my_scale.*not a stock Keras layer"):
        kdzoo.to_plain_keras(custom)
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1, name="lam")(inputs))
    with pytest.raises(ValueError, match="'lam' is a Lambda layer"):
        kdzoo.to_plain_keras(lam)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        kdzoo.to_plain_keras(Sub())
    sd = kdzoo.SelfDistillation(tiny_pyramidnet(), num_classes=10)
    with pytest.raises(TypeError, match="export_exit"):
        kdzoo.to_plain_keras(sd)


LOADER = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoKdzoo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "kdzoo" or name.startswith("kdzoo."):
                raise ImportError("kdzoo is blocked in this process")
            return None

    sys.meta_path.insert(0, NoKdzoo())
    import keras
    import numpy as np

    cases, refused = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    report = {}
    try:
        keras.saving.load_model(refused)
        report["refused"] = ""
    except Exception as e:  # expected: the class lives in kdzoo
        report["refused"] = f"{type(e).__name__}: {e}"
    for name, (path, data) in cases.items():
        model = keras.saving.load_model(path)  # safe mode (the default)
        arrays = np.load(data)
        got = model.predict(arrays["x"], verbose=0)
        report[name] = float(np.abs(got - arrays["y"]).max() / np.abs(arrays["y"]).max())
    report["kdzoo_imported"] = any(m.split(".")[0] == "kdzoo" for m in sys.modules)
    print(json.dumps(report))
""")


@pytest.mark.slow  # a fresh TF process (~10-20 s on 2 shared cores)
def test_saved_plain_models_load_and_agree_in_a_process_without_kdzoo(tmp_path):
    bit = tiny_bit()
    cifar = tiny_pyramidnet()
    sd = kdzoo.SelfDistillation(tiny_bit(), num_classes=10)
    randomize_batchnorm(sd.network)
    exit1 = sd.export_exit(1)
    cases = {}
    for name, model in (("bit", bit), ("cifar_pyramidnet", cifar), ("exit1", exit1)):
        plain = kdzoo.to_plain_keras(model)
        path = str(tmp_path / f"{name}.keras")
        plain.save(path)
        with zipfile.ZipFile(path) as z:
            config = z.read("config.json").decode()
        assert "kdzoo" not in config and "StandardizedConv2D" not in config
        x = images(3, 32)
        np.savez(tmp_path / f"{name}.npz", x=x, y=model.predict(x, verbose=0))
        cases[name] = (path, str(tmp_path / f"{name}.npz"))
    # The unconverted BiT, for contrast, needs kdzoo's class to load.
    raw = str(tmp_path / "raw_bit.keras")
    bit.save(raw)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(cases), json.dumps(raw)],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report.pop("kdzoo_imported") is False
    assert "StandardizedConv2D" in report.pop("refused")
    assert set(report) == set(cases)
    for name, rel_err in report.items():
        assert rel_err < 1e-4, (name, rel_err)


@pytest.mark.slow
def test_plain_exit_exports_as_saved_model_and_tflite(tmp_path):
    sd = kdzoo.SelfDistillation(tiny_bit(), num_classes=10)
    exit2 = sd.export_exit(2)
    plain = kdzoo.to_plain_keras(exit2)
    x = images(2, 32)
    ref = exit2.predict(x, verbose=0)
    tol = 1e-4 * np.abs(ref).max()
    saved = str(tmp_path / "saved_model")
    flat = to_tflite(plain, saved_model_dir=saved)
    loaded = tf.saved_model.load(saved)  # keep it referenced while serving
    served = loaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, ref, rtol=1e-4, atol=tol)
    interpreter = tf.lite.Interpreter(model_content=flat)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(lite, ref, rtol=1e-4, atol=tol)
