"""``kdzoo`` console script and ``kdzoo.evaluate``, against figures measured elsewhere.

The zoo's Fashion-MNIST students carry the test top-1 the study measured when it
trained them (their cards); ``kdzoo.evaluate`` and ``kdzoo eval`` must reproduce it.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdzoo
from kdzoo.cli import main
from kdzoo.data import fashion_mnist

NAME = "fmnist_cnn_w16.kdzoo_small_same_ic"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_evaluate_reproduces_the_cards_measured_top1_from_a_name_and_from_arrays():
    card = kdzoo.model_info(NAME)["top1"]
    by_name = kdzoo.evaluate(NAME, "fashion_mnist")
    assert by_name["num_examples"] == 10_000
    assert by_name["top1"] == pytest.approx(card, abs=0.005)
    images, labels = fashion_mnist.load("test")
    by_arrays = kdzoo.evaluate(kdzoo.load(NAME), (images[:500], labels[:500]))
    model = kdzoo.load(NAME)
    by_hand = 100 * np.mean(model.predict(images[:500], verbose=0).argmax(-1) == labels[:500])
    assert by_arrays["top1"] == pytest.approx(by_hand)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        kdzoo.evaluate(model, (images[:8].astype("float32") / 255, labels[:8]))


def test_cli_list_info_and_errors(capsys):
    code, out, _ = run_cli(capsys, "list", "fmnist_cnn_w16.*")
    assert code == 0 and NAME in out.split()
    assert all(n.startswith("fmnist_cnn_w16.") for n in out.split())
    code, out, _ = run_cli(capsys, "info", NAME)
    assert code == 0 and json.loads(out) == json.loads(json.dumps(kdzoo.model_info(NAME)))
    code, _, err = run_cli(capsys, "info", "fmnist_cnn_w61")
    assert code == 2 and "fmnist_cnn_w61" in err
    code, _, err = run_cli(capsys, "recipe", "petz")
    assert code == 2 and "pets" in err
    with pytest.raises(SystemExit):  # argparse: a missing --format is a usage error
        main(["export", NAME, "x.keras"])


@pytest.mark.slow
def test_cli_eval_prints_the_cards_figure(capsys):
    code, out, _ = run_cli(capsys, "eval", NAME, "--dataset", "fashion_mnist")
    assert code == 0
    result = json.loads(out)
    assert result["top1"] == pytest.approx(kdzoo.model_info(NAME)["top1"], abs=0.005)
    assert result["protocol"] == "resize_small(28)|central_crop(28)"


@pytest.mark.slow
def test_cli_export_formats_give_the_zoo_models_logits(tmp_path, capsys):
    images = fashion_mnist.load("test")[0][:16]
    want = np.asarray(kdzoo.load(NAME)(images.astype("float32"), training=False))
    keras_file, saved, lite = (str(tmp_path / n) for n in ("m.keras", "sm", "m.tflite"))
    for fmt, out in (("plain", keras_file), ("saved_model", saved), ("tflite", lite)):
        assert run_cli(capsys, "export", NAME, out, "--format", fmt)[0] == 0
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []
    plain = keras.saving.load_model(keras_file)
    np.testing.assert_allclose(plain(images.astype("float32")), want, rtol=1e-4, atol=1e-4)
    loaded = tf.saved_model.load(saved)  # keep it: its variables live as long as it does
    served = loaded.serve(tf.constant(images, tf.float32))
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-4)
    interp = tf.lite.Interpreter(model_path=lite)
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], images.shape)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], images.astype("float32"))
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(interp.get_output_details()[0]["index"]),
                               want, rtol=1e-3, atol=1e-3)
    code, _, err = run_cli(capsys, "export", NAME, saved, "--format", "saved_model")
    assert code == 2 and "exists" in err


@pytest.mark.slow
def test_an_installed_package_reaches_the_recipes(tmp_path):
    """``setup.py build_py`` is what a wheel holds: ``kdzoo recipe`` must run from it alone."""
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    assert os.path.isfile(tmp_path / "kdzoo" / "recipes" / "pets.py")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "kdzoo", "recipe", "pets", "--smoke",
                          "--dry_run", "--workdir", str(tmp_path / "w")],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    plan = json.loads(out.stdout[out.stdout.index("{"):])
    assert (plan["dataset"], plan["variant"], plan["total_steps"]) == ("pets", "funmatch", 2)
    assert not os.path.exists(tmp_path / "w" / "config.json")  # a dry run writes nothing
