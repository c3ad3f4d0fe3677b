"""The TFDS deprecation warnings every run printed are silenced, narrowly (issue 27):
TFDS's own "`FeatureConnector.dtype` / `TensorInfo.dtype` is deprecated" messages go,
any other warning (also from absl, also about deprecation) still shows.
"""

import logging
import os
import subprocess
import sys

import pytest

from kdzoo.data.quiet import silence_known_warnings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TFDS 4.9's wording, copied from a smoke run's stderr.
TFDS_MSG = ("`FeatureConnector.dtype` is deprecated. Please change your code to use NumPy "
            "with the field `FeatureConnector.np_dtype` or use TensorFlow with the field "
            "`FeatureConnector.tf_dtype`.")


def test_the_tfds_message_goes_other_warnings_stay(caplog):
    silence_known_warnings()
    silence_known_warnings()  # idempotent: one filter
    absl = logging.getLogger("absl")
    assert sum(type(f).__name__ == "KnownHarmless" for f in absl.filters) == 1
    with caplog.at_level(logging.WARNING):
        absl.warning(TFDS_MSG)
        absl.warning("`Foo.dtype` is deprecated. Please change your code")  # not TFDS's
        absl.warning("a real warning")
        absl.error(TFDS_MSG)  # only the WARNING level is hidden
    assert [r.getMessage() for r in caplog.records] == [
        "`Foo.dtype` is deprecated. Please change your code", "a real warning", TFDS_MSG]


PROBE = """
import tensorflow_datasets as tfds
from absl import logging
from kdzoo.data import pipeline
try:
    pipeline.tfds_builder("pets", data_dir="/nonexistent-kdzoo")
except Exception:
    pass
tfds.features.Image().dtype  # TFDS logs its deprecation warning here
logging.warning("a real warning stays")
"""


@pytest.mark.slow
def test_opening_a_tfds_dataset_silences_tfds_own_warning():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    err = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stderr
    assert "a real warning stays" in err
    assert "is deprecated. Please change your code to use NumPy" not in err


@pytest.mark.slow
def test_a_smoke_run_has_no_tfds_deprecation_warnings(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "pets.py"), "--smoke",
                           "--epochs", "1", "--workdir", str(tmp_path / "w")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Constructing tf.data.Dataset" in proc.stderr  # TFDS did open its splits
    assert "is deprecated. Please change your code to use NumPy" not in proc.stderr
