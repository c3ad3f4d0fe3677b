"""Self-distillation benchmark: training-step cost and depth-adaptive inference.

1. Training step: a 4-exit ``SelfDistillation`` around a CIFAR ResNet-18 vs the
   plain backbone with cross entropy (images/s, same batches).
2. Trains the 4-exit model on real Fashion-MNIST (padded to 32x32), calibrates
   a shared threshold on half of the test set for "at most 0.5 points below the
   deepest exit", and reports on the other half, for several thresholds:
   accuracy, average sections run, average FLOPs (fraction of the plain
   network) and images/s of ``EarlyExit`` vs the plain network.

Prints a table, then ONE JSON line: ``ratio`` = early-exit images/s at the
calibrated threshold / plain-network images/s, ``goal`` = 1.5 (the issue's
target: 1.5x the images/s at <= 0.5 points accuracy loss); ``train_step_cost``
= plain / 4-exit training images/s, goal ``train_step_cost_goal`` = 1.3 (at most).

    python benchmarks/self_distill.py --quick
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdzoo.data import fashion_mnist  # noqa: E402
from kdzoo.distill import early_exit as ee  # noqa: E402
from kdzoo.distill.self_distill import SelfDistillation  # noqa: E402
from kdzoo.registry import architectures  # noqa: E402


def backbone(width):
    return architectures()["cifar_resnet18"].builder(
        num_classes=10, include_top=True, input_shape=(32, 32, 1), pooling=None,
        base_width=width)


def train_rate(model, x, y, batch, steps):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    model.fit(ds.take(2), epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(ds.take(steps), epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def best_rate(run, n, repeats):
    """Images/s of ``run()`` over ``n`` images: best of ``repeats`` (shared CPUs are noisy)."""
    best, result = 0.0, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = max(best, n / (time.perf_counter() - start))
    return best, result


def full_rate(net, x, batch, repeats):
    fn = tf.function(lambda t: net(t, training=False), reduce_retracing=True)
    fn(tf.constant(x[:batch]))

    def run():
        return np.concatenate([fn(tf.constant(x[i:i + batch])).numpy()
                               for i in range(0, len(x), batch)])
    return best_rate(run, len(x), repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, few images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None,
                        help="a .keras file: load the trained model from it if it exists, "
                             "else train and save it there")
    args = parser.parse_args()
    width, n_train, epochs, batch = (8, 1024, 1, 64) if args.quick else (16, 15000, 2, 128)
    timing_steps = 8 if args.quick else 20
    repeats = 2 if args.quick else 5
    infer_batch = 256

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = fashion_mnist.load("train")
    x_test, y_test = fashion_mnist.load("test")
    pad = ((0, 0), (2, 2), (2, 2), (0, 0))
    x_train = np.pad(x_train[:n_train], pad).astype("float32")
    y_train = y_train[:n_train]
    x_test = np.pad(x_test, pad).astype("float32")
    if args.quick:
        x_test, y_test = x_test[:1000], y_test[:1000]
    half = len(x_test) // 2
    x_cal, y_cal, x_eval, y_eval = x_test[:half], y_test[:half], x_test[half:], y_test[half:]

    # 1. training-step cost
    plain = backbone(width)
    plain.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sd = SelfDistillation(backbone(width), num_classes=10)
    sd.compile(optimizer=keras.optimizers.Adam(2e-3))
    plain_ips = train_rate(plain, x_train, y_train, batch, timing_steps)
    sd_ips = train_rate(sd, x_train, y_train, batch, timing_steps)
    print(f"train step: plain {plain_ips:.0f} img/s, 4-exit self distillation "
          f"{sd_ips:.0f} img/s (cost x{plain_ips / sd_ips:.2f})")

    # 2. train, calibrate, measure early exit
    if args.model and os.path.exists(args.model):
        sd = keras.models.load_model(args.model)
        print(f"loaded the trained model from {args.model}")
    else:
        t0 = time.perf_counter()
        sd.fit(x_train, y_train, batch_size=batch, epochs=epochs, verbose=0)
        print(f"trained {epochs} epoch(s) on {n_train} images in "
              f"{time.perf_counter() - t0:.0f}s")
        if args.model:
            sd.save(args.model)
    ev = sd.evaluate(x_eval, y_eval, batch_size=infer_batch, verbose=0, return_dict=True)
    print("exits top-1:", {k: round(v, 4) for k, v in ev.items() if k.endswith("top1")})

    flops = ee.exit_flops(sd)
    net_ips, logits = full_rate(sd.backbone, x_eval, infer_batch, repeats)
    full_acc = float(np.mean(logits.argmax(-1) == y_eval))
    print(f"plain network: top-1 {full_acc:.4f}, {flops['full'] / 1e6:.1f} MFLOPs/img, "
          f"{net_ips:.0f} img/s (batch {infer_batch})")
    print(f"FLOPs to exit k (MFLOPs): {[round(f / 1e6, 2) for f in flops['to_exit']]}")

    cal_full = float(np.mean(sd.predict(x_cal, verbose=0)[-1].argmax(-1) == y_cal))
    cal = ee.calibrate_thresholds(sd, x_cal, y_cal, target_accuracy=cal_full - 0.005)
    print(f"calibrated threshold {cal['thresholds'][0]:.4f} for <= 0.5 points below the deepest "
          f"exit on held-out half (met={cal['met']})")

    runner = ee.EarlyExit(sd, cal["thresholds"])
    plain_fn = tf.function(lambda t: sd.backbone(t, training=False), reduce_retracing=True)
    plain_fn(tf.constant(x_eval[:infer_batch]))

    def plain_run():
        return [plain_fn(tf.constant(x_eval[i:i + infer_batch])).numpy()
                for i in range(0, len(x_eval), infer_batch)]

    rows = []
    print(f"{'threshold':>10} {'top-1':>7} {'sections':>9} {'FLOPs':>7} {'img/s':>7} "
          f"{'speed-up':>8}  exit fractions   (speed-up: median over {repeats} "
          "interleaved plain/early-exit runs)")
    sweep = [0.9] if args.quick else [0.5, 0.8, 0.9, 0.95, 0.99]
    for t in [*sweep, cal["thresholds"][0], 1.0]:
        runner.thresholds = [t] * (sd.num_exits - 1)
        runner(x_eval[:infer_batch])  # warm-up
        ratios, rates = [], []
        for _ in range(repeats):
            plain_rate = best_rate(plain_run, len(x_eval), 1)[0]
            ips, r = best_rate(lambda: runner.predict(x_eval, batch_size=infer_batch),
                               len(x_eval), 1)
            ratios.append(ips / plain_rate)
            rates.append(ips)
        r["images_per_s"] = float(np.median(rates))
        r["speedup"] = float(np.median(ratios))
        r["accuracy"] = float(np.mean(r["logits"].argmax(-1) == y_eval))
        rows.append((t, r))
        print(f"{t:10.4f} {r['accuracy']:7.4f} {r['avg_sections']:9.2f} "
              f"{r['flops_fraction']:7.2f} {r['images_per_s']:7.0f} "
              f"{r['speedup']:8.2f}  "
              f"{[round(f, 3) for f in r['exit_fractions']]}")
    calibrated = rows[-2][1]
    print(json.dumps({
        "benchmark": "self_distill",
        "ratio": round(calibrated["speedup"], 3),
        "goal": 1.5,
        "what": "median of interleaved (early-exit img/s at the threshold calibrated for "
                "<=0.5pt loss) / (plain network img/s)",
        "calibrated_threshold": round(cal["thresholds"][0], 4),
        "early_exit_top1": round(calibrated["accuracy"], 4),
        "plain_top1": round(full_acc, 4),
        "flops_fraction": round(calibrated["flops_fraction"], 3),
        "avg_sections": round(calibrated["avg_sections"], 3),
        "train_step_cost": round(plain_ips / sd_ips, 3),
        "train_step_cost_goal": 1.3,
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
