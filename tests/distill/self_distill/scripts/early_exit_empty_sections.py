"""Run EarlyExit with thresholds that leave the deeper sections no rows.

Run as a script so the caller chooses ``TF_ENABLE_ONEDNN_OPTS`` before TensorFlow is
imported (oneDNN's kernels are what fail on an empty batch). Prints one JSON line.
"""
import json
import sys

import keras
import numpy as np

import kdzoo
from kdzoo.distill.self_distill import early_exit as ee
from kdzoo.distill.self_distill import SelfDistillation

results = []
for arch, shape in (("cifar_resnet18", (32, 32, 3)), ("fmnist_cnn_w16", (28, 28, 1))):
    keras.utils.set_random_seed(0)
    net = kdzoo.load(arch, weights=None, num_classes=10, input_shape=shape)
    model = SelfDistillation(net, num_classes=10)
    images = np.random.RandomState(0).randint(0, 256, (7, *shape)).astype("float32")
    full = [np.asarray(z) for z in model.predict(images, verbose=0)]
    shallow = [0.0] * (model.num_exits - 1)  # every row leaves at exit 1
    runner = ee.EarlyExit(model, shallow)
    for batch in (1, 7):
        out = runner(images[:batch])
        results.append({
            "arch": arch, "batch": batch,
            "section_rows": [int(v) for v in out["section_rows"].numpy()],
            "exits": [int(v) for v in out["exit"].numpy()],
            "max_abs_diff": float(np.abs(out["logits"].numpy() - full[0][:batch]).max()),
        })
    # A mixed case: exit 1 never, exit 2 always -> sections 3.. get no rows.
    if model.num_exits > 2:
        runner.thresholds = [1.0, 0.0] + [0.0] * (model.num_exits - 3)
        out = runner(images[:1])
        results.append({"arch": arch, "batch": 1, "mixed": True,
                        "section_rows": [int(v) for v in out["section_rows"].numpy()],
                        "exits": [int(v) for v in out["exit"].numpy()],
                        "max_abs_diff": float(np.abs(out["logits"].numpy()
                                                     - full[1][:1]).max())})
print(json.dumps(results))
sys.stdout.flush()
