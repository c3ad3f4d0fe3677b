"""Section 3.5's pretraining: the student's network on a related, larger task, once.

The paper initialises its students from a network pretrained on a larger task
(ImageNet-21k) and compares that with training from scratch. Here the larger task
is a coarser labelling of the 59,000 Fashion-MNIST training images that are *not*
the study's 1,000 (``fashion_mnist_ood.outside_subset``, the runner's own draw),
never the subset's 10-class labels nor any test image:

    tops     (0): T-shirt/top (0), pullover (2), coat (4), shirt (6)
    bottoms  (1): trouser (1), dress (3)
    footwear (2): sandal (5), sneaker (7), ankle boot (9)
    bags     (3): bag (8)

Training: the student architecture with a 4-class head, from scratch, by the zoo
teacher's recipe (``fashion_mnist_teacher.py``: 30 epochs, Adam 3e-3 with the paper's
decoupled weight decay 1e-4, 500 warm-up steps then cosine, pad-crop + flip, batch 128),
seed 0: one pretrained network for every seed of the init arm, as the paper has one
checkpoint. Its run directory is the cache (a finished run is never retrained; its
``pretrain.json`` records the command, seed, epochs and the measured coarse test
top-1, which is measured once after training and selects nothing). The init arm's
student is the same architecture with 10 classes: every layer but ``head`` copied from
the pretrained network, the head fresh (initialised by the run's seed).
"""

import dataclasses
import functools
import json
import os
import time

import numpy as np

COARSE = ("tops", "bottoms", "footwear", "bags")
FINE_TO_COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], np.int32)  # by fine class id
HEAD = "head"  # the classifier layer of kdzoo's Fashion-MNIST CNNs (models/common.py)
PRETRAIN = dict(task="coarse4", classes=list(COARSE), fine_to_coarse=FINE_TO_COARSE.tolist(),
                train_images=59_000, epochs=30, batch_size=128, lr=3e-3, weight_decay=1e-4,
                warmup_steps=500, crop="pad", seed=0)
RECORD = "pretrain.json"


def coarse_outside_subset(train_per_class=100, subset_seed=0):
    """The 59,000 images outside the study's subset with their *coarse* labels (0..3)."""
    import fashion_mnist_ood as ood
    images, labels = ood.outside_subset_labelled(train_per_class, subset_seed)
    return images, FINE_TO_COARSE[labels]


def pretrain_run(s, workdir, labels_run):
    """The pretraining run in ``workdir``: ``labels_run`` (the study's, for its data dir,
    strategy and run flags) on the coarse task, by :data:`PRETRAIN`."""
    from kdzoo import load
    p = PRETRAIN
    return dataclasses.replace(
        labels_run, workdir=workdir, seed=p["seed"], epochs=p["epochs"], mixup_alpha=None,
        batch_size=p["batch_size"], crop=p["crop"], train_per_class=None,
        model=functools.partial(load, s["student"], weights=None, num_classes=len(COARSE)),
        optimizer=functools.partial(_optimizer, lr=p["lr"], warmup_steps=p["warmup_steps"],
                                    weight_decay=p["weight_decay"]),
        train_images=functools.partial(coarse_outside_subset, s["train_per_class"],
                                       s["subset_seed"]), num_train_examples=p["train_images"],
        eval_roles=(), params=dict(p))  # test labels are 10-class: measure() scores coarse


def _optimizer(total_steps, lr, warmup_steps, weight_decay):
    from kdzoo.distill import paper_optimizer
    return paper_optimizer(lr, total_steps, warmup_steps, weight_decay)


def pretrained_student(path, arch="fmnist_cnn_w16"):
    """``arch`` with 10 classes, every layer but ``head`` loaded from the pretrained
    network at ``path`` (weights and batch-norm statistics), the head fresh."""
    import keras

    import kdzoo
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: section 3.5's pretrained network is not there; `python "
            f"recipes/fashion_mnist.py --sections --section 3.5` trains it before the runs.")
    source, student = keras.saving.load_model(path), kdzoo.load(arch, weights=None)
    for layer in (x for x in student.layers if x.name != HEAD and x.weights):
        layer.set_weights(source.get_layer(layer.name).get_weights())
    return student


def ensure_pretrained(run, command, data_dir=None, wait_s=30):
    """Train ``run`` unless finished (waiting while another process trains it), then
    write its ``pretrain.json`` once; returns that record."""
    from kdzoo.atomic import write_json
    _train_or_wait(run, wait_s)
    if read_record(run.workdir):
        return read_record(run.workdir)
    steps = json.load(open(os.path.join(run.workdir, "metrics.json")))["total_steps"]
    record = dict(PRETRAIN, command=command, workdir=run.workdir, total_steps=steps,
                  model=os.path.join(run.workdir, "model.keras"),
                  coarse_test_top1=measure(run, data_dir))
    write_json(os.path.join(run.workdir, RECORD), record)
    return record


def _train_or_wait(run, wait_s):
    from kdzoo.errors import WorkdirInUseError
    from kdzoo.train import study
    while True:
        try:
            return study.run_one(run)
        except WorkdirInUseError:
            print(f"section 3.5: another process is pretraining in {run.workdir}; waiting",
                  flush=True)
            time.sleep(wait_s)


def measure(run, data_dir=None):
    """The pretrained network's top-1 on the coarse task, on the 10,000 test images."""
    import keras

    from kdzoo.data import fashion_mnist
    from kdzoo.evaluation import top1
    from kdzoo.train.run_dir import model_file
    images, labels = fashion_mnist.load("test", data_dir)
    model = keras.saving.load_model(model_file(run.workdir))
    logits = model.predict(images.astype("float32"), batch_size=1000, verbose=0)
    return top1(logits, FINE_TO_COARSE[labels])


def read_record(workdir):
    """``pretrain.json`` of a finished pretraining in ``workdir`` (``{}`` if none yet)."""
    path = os.path.join(workdir, RECORD)
    return json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
