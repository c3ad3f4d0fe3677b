"""The ImageNet card's student was distilled for 9,600 epochs (big_vision bit_i1k.py at
total_epochs=9600); ``recipes/imagenet.py --preset published`` is that run (issue 24 audit).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_published_preset_dry_run_is_the_9600_epoch_run(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "imagenet.py"), "--preset", "published",
         "--dry_run", "--workdir", str(tmp_path / "w")],
        env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    plan = json.loads(out.strip().splitlines()[-1])
    # bit_i1k.py: batch 4096, lr 0.03, wd 3e-4, T 1, 5000 warm-up steps, 224 px.
    assert (plan["epochs"], plan["batch_size"], plan["lr"], plan["weight_decay"]) == \
        (9600, 4096, 0.03, 3e-4)
    assert (plan["temperature"], plan["warmup_steps"], plan["image_size"]) == (1, 5000, 224)
    assert plan["teacher"] == "bit_r152x2.funmatch_teacher_in1k_224"
    # train[:98%] of 1,281,167 = 1,255,543.66 -> 1,255,544 images;
    # round(9600 * 1,255,544 / 4096) = round(2,942,681.25) = 2,942,681 steps.
    assert (plan["train_examples"], plan["total_steps"]) == (1_255_544, 2_942_681)
    assert not os.path.exists(tmp_path / "w")  # a dry run trains nothing
