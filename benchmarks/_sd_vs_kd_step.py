"""Training cost per step of the BYOT table's methods, side by side in one process.

Why: claim 4 of the table (self distillation trains faster than classical KD; the paper:
4.6x) is judged from the runs' own seconds per epoch, and those runs were trained on
different days under different loads. This times the train steps alone, on one cached
batch of 128 at 32 px (no input pipeline, no evaluation), in interleaved windows:
the plain network on labels (``baseline``), :class:`kdzoo.SelfDistillation` in its
``self_distillation`` and ``deep_supervision`` modes (the journal version, as the
table), and :class:`kdzoo.KnowledgeDistillation` from the table's kd teacher (ResNet-18
at ``base_width=16``, random weights: its cost, not its accuracy, is measured).
CPU seconds per step are the steadier figure on a shared machine.

    python benchmarks/_sd_vs_kd_step.py --arch cifar_resnet18 --windows 3 --steps 20

Last line: JSON with median ms per step (wall, CPU) per method and each method's CPU
time relative to ``baseline``.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _step_backends import BUILD, medians, time_fits  # noqa: E402


def _net(arch, build=None):
    import kdzoo
    return kdzoo.load(arch, weights=None, num_classes=10, input_shape=(32, 32, 1),
                      build_options=build or BUILD[arch])


def models(arch):
    """``{method: compiled model}`` as the table builds them (SGD as a stand-in optimizer:
    the same for every method, so the ratios are the losses' and networks' cost)."""
    import keras
    from kdzoo import KnowledgeDistillation, SelfDistillation
    sgd = lambda: keras.optimizers.SGD(0.1, momentum=0.9)  # noqa: E731
    out = {"baseline": _net(arch)}
    out["baseline"].compile(optimizer=sgd(), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    for mode in ("self_distillation", "deep_supervision"):
        out[mode] = SelfDistillation(_net(arch), num_classes=10, version="journal", mode=mode)
        out[mode].compile(optimizer=sgd())
    out["kd"] = KnowledgeDistillation(_net("cifar_resnet18", {"base_width": 16}), _net(arch),
                                      alpha=0.3, temperature=3.0)
    out["kd"].compile(optimizer=sgd())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="cifar_resnet18", choices=sorted(BUILD))
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    res = time_fits(models(a.arch), a.windows, a.steps)
    med, ratios = medians(res, "baseline")
    print(json.dumps(dict(arch=a.arch, batch=128, windows=res, median_ms_per_step=med,
                          cpu_vs_baseline=ratios), sort_keys=True))

if __name__ == "__main__":
    main()
