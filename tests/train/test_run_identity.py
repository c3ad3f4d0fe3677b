"""What a run's fields do not pin down is part of its identity too (issue item 4): the
teacher's weights (a callable may load any file) and the *resolved* dtype policy
(``"auto"`` resolves per machine). A resume that differs in either is refused; a run
recorded by older kdzoo, without these keys, still resumes.

One tiny FunMatch run on mock pets data (tiny BiTs at 32 px, 2 steps) is trained once;
each test reruns a copy of its work directory.
"""

import functools
import json
import shutil

import keras
import pytest

import kdzoo.train.precision
from kdzoo.errors import SettingsMismatchError
from kdzoo.models.bit import tiny_bit

pytestmark = pytest.mark.slow  # each test trains or rebuilds tiny BiTs (several seconds)

NO_BF16, BF16 = set(), {"avx512_bf16"}  # CPU flags of two machines (no accelerators)


def teacher_from(path):
    """The teacher: a tiny BiT with the weights in ``path`` (like kdzoo.load(weights=path))."""
    model = tiny_bit(37, (32, 32, 3))
    model.load_weights(path)
    return model


def _weights_file(path, seed):
    keras.utils.set_random_seed(seed)
    tiny_bit(37, (32, 32, 3)).save_weights(str(path))
    return str(path)


def _machine(monkeypatch, flags):
    """Make ``mixed_precision="auto"`` see a machine with these CPU flags and no GPU."""
    monkeypatch.setattr(kdzoo.train.precision, "read_cpu_flags", lambda *a, **k: set(flags))
    monkeypatch.setattr(kdzoo.train.precision, "detect_accelerators", lambda: [])


def _run(workdir, teacher_weights, **changes):
    import tensorflow_datasets as tfds

    from kdzoo.train import FunMatchRun, run_funmatch
    run = FunMatchRun(dataset="pets", teacher=functools.partial(teacher_from, teacher_weights),
                      student=functools.partial(tiny_bit, 37, (32, 32, 3)),
                      workdir=str(workdir), epochs=1, batch_size=8, warmup_steps=1,
                      image_size=32, num_train_examples=16, eval_batch_size=8,
                      eval_roles=("test",), verbose=0, seed=3, mixed_precision="auto",
                      **changes)
    try:
        with tfds.testing.mock_data(num_examples=16):
            return run_funmatch(run)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``(workdir, teacher weights)`` of a finished run on a machine without native bf16."""
    root = tmp_path_factory.mktemp("identity")
    weights = _weights_file(root / "teacher.weights.h5", seed=1)
    with pytest.MonkeyPatch.context() as mp:
        _machine(mp, NO_BF16)
        _run(root / "run", weights)
    return root / "run", weights


def _copy(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished[0], workdir)
    return workdir


def test_the_record_holds_the_resolved_policy_and_the_teacher_weights(finished):
    config = json.load(open(finished[0] / "config.json"))
    assert config["mixed_precision"] == "auto" and config["precision"] == "float32"
    sha = config["teacher_weights_sha256"]
    assert isinstance(sha, list) and len(sha) == 1 and len(sha[0]) == 64


def test_a_resume_with_other_teacher_weights_is_refused(finished, tmp_path, monkeypatch):
    workdir = _copy(finished, tmp_path)
    _weights_file(finished[1], seed=2)  # the same file name, other weights
    _machine(monkeypatch, NO_BF16)
    try:
        with pytest.raises(SettingsMismatchError, match=r"teacher_weights_sha256: \['"):
            _run(workdir, finished[1])
    finally:
        _weights_file(finished[1], seed=1)  # the fixture's teacher again
    assert json.load(open(workdir / "config.json"))["reruns"] == []


def test_a_resume_where_auto_resolves_to_another_policy_is_refused(finished, tmp_path,
                                                                   monkeypatch):
    workdir = _copy(finished, tmp_path)
    _machine(monkeypatch, BF16)  # "auto" is mixed_bfloat16 on this machine
    with pytest.raises(SettingsMismatchError,
                       match=r"precision: 'float32' there, 'mixed_bfloat16' now"):
        _run(workdir, finished[1])


def test_a_run_recorded_without_these_keys_still_resumes_and_records_them(finished, tmp_path,
                                                                          monkeypatch):
    workdir = _copy(finished, tmp_path)
    config = json.load(open(workdir / "config.json"))
    for key in ("precision", "teacher_weights_sha256"):  # as older kdzoo recorded it
        config.pop(key, None)
    (workdir / "config.json").write_text(json.dumps(config))
    _machine(monkeypatch, BF16)  # unknown before, so not a difference
    metrics = _run(workdir, finished[1])
    assert metrics["total_steps"] == 2
    config = json.load(open(workdir / "config.json"))
    assert config["precision"] == "mixed_bfloat16" and len(config["teacher_weights_sha256"]) == 1
    assert set(config["reruns"][-1]["changed"]) == {"precision", "teacher_weights_sha256"}
