"""Which backend setting makes the BYOT table's small train step cheaper on this CPU.

Why: the table's networks (1/8 width, 32 px, batch 128) are small enough that the
step is bound by per-op overhead, not by the matmul rate, and the usual levers act
differently here than at BiT scale. One process compares, in interleaved windows of
the same cached batch (no input pipeline), Keras ``fit`` steps of one network
compiled with ``jit_compile=False`` (Keras' own default on a CPU-only machine),
``jit_compile=True`` (XLA) and under ``mixed_bfloat16``; a child process repeats the
float32 / no-XLA step with ``TF_ENABLE_ONEDNN_OPTS=0`` (oneDNN is chosen at import).
CPU seconds per step are the steadier figure on a shared machine (DESIGN: timing).

    python benchmarks/_step_backends.py --arch cifar_resnet18 --windows 3 --steps 30

Last line: JSON with ms per step (wall, CPU) per setting and the CPU ratios against
float32 without XLA.
"""

import argparse
import json
import os
import subprocess
import sys
import time

BUILD = {"cifar_resnet18": {"base_width": 8}, "cifar_vgg19_bn": {"width_divisor": 8},
         "cifar_wrn20_8": {"base_width": 2}}


def _model(arch, jit, policy):
    import keras
    import kdzoo
    keras.mixed_precision.set_global_policy(policy)
    net = kdzoo.load(arch, weights=None, num_classes=10, input_shape=(32, 32, 1),
                     build_options=BUILD[arch])
    keras.mixed_precision.set_global_policy("float32")
    net.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return net


def measure(arch, settings, windows, steps):
    """``{setting: [(wall_ms, cpu_ms) per step, per window]}``, windows interleaved."""
    return time_fits({name: _model(arch, jit, policy) for name, (jit, policy)
                      in settings.items()}, windows, steps)


def time_fits(nets, windows, steps, batch=128):
    """``{name: [(wall_ms, cpu_ms) per step, per window]}`` of Keras ``fit`` on one cached
    batch at 32 px, each net traced first, then the nets' windows interleaved."""
    import numpy as np
    import tensorflow as tf
    x = np.random.RandomState(0).uniform(0, 255, (batch, 32, 32, 1)).astype("float32")
    data = tf.data.Dataset.from_tensors((x, np.arange(batch) % 10)).repeat()
    for net in nets.values():
        net.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # trace outside the timing
    out = {name: [] for name in nets}
    for _ in range(windows):
        for name, net in nets.items():
            wall, cpu = time.perf_counter(), time.process_time()
            net.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            out[name].append((1000 * (time.perf_counter() - wall) / steps,
                              1000 * (time.process_time() - cpu) / steps))
    return out


def medians(res, reference):
    """``(median ms per step {name: {wall_ms, cpu_ms}}, CPU ratios against reference)``."""
    med = {k: dict(wall_ms=_median([w for w, _ in v]), cpu_ms=_median([c for _, c in v]))
           for k, v in res.items()}
    return med, {k: med[k]["cpu_ms"] / med[reference]["cpu_ms"] for k in med}


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="cifar_resnet18", choices=sorted(BUILD))
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:  # oneDNN off: float32, no XLA only
        print(json.dumps(measure(a.arch, {"float32_onednn_off": (False, "float32")},
                                 a.windows, a.steps)))
        return
    res = measure(a.arch, {"float32": (False, "float32"), "float32_xla": (True, "float32"),
                           "mixed_bfloat16": (False, "mixed_bfloat16")}, a.windows, a.steps)
    child = subprocess.run([sys.executable, __file__, "--child", "--arch", a.arch,
                            "--windows", str(a.windows), "--steps", str(a.steps)],
                           env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0"),
                           capture_output=True, text=True, check=True)
    res.update(json.loads(child.stdout.strip().splitlines()[-1]))
    med, ratios = medians(res, "float32")
    print(json.dumps(dict(arch=a.arch, batch=128, windows=res, median_ms_per_step=med,
                          cpu_ratio_vs_float32=ratios), sort_keys=True))


if __name__ == "__main__":
    main()
