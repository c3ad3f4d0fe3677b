"""The machine's own limit, measured: a large matmul's FLOP/s in a given dtype.

Why measured and not estimated: a CPU's "peak" from cores x clock x SIMD lanes was
off by 1.6x on these 2-vCPU machines (turbo, shared hosts, AVX-512 running at half
rate), and bfloat16 may or may not be native. Every benchmark that reports a model
FLOP utilisation reports ``fraction_of_matmul`` beside it: the model's FLOP/s divided
by what a 2048^2 ``tf.matmul`` reaches in the same run, the same process, the same
policy. Each window records wall and process CPU time (a VM may lose a core for
seconds), and the rate is the median over windows.
"""

import statistics
import time

__all__ = ["measure_matmul_rate", "fraction_of_matmul"]


def _compute_dtype(policy_or_dtype):
    """``"mixed_bfloat16"`` -> ``"bfloat16"``; ``"float32"`` stays; a dtype name passes."""
    name = str(policy_or_dtype)
    return name[len("mixed_"):] if name.startswith("mixed_") else name


def measure_matmul_rate(policy="float32", n=2048, windows=5, seconds=1.0, device=None):
    """FLOP/s of an ``n x n`` matmul in ``policy``'s compute dtype on ``device``.

    Returns ``{"dtype", "n", "gflops" (median over windows), "gflops_min", "gflops_max",
    "cpu_over_wall" (median process CPU time / wall time per window)}``.
    """
    import tensorflow as tf
    dtype = _compute_dtype(policy)
    with tf.device(device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")):
        a = tf.random.stateless_normal((n, n), (1, 2), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
        step = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
        step(a, b).numpy()  # trace + warm-up
        flops_per_call = 2.0 * n ** 3
        rates, ratios = [], []
        for _ in range(windows):
            calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
            while True:
                step(a, b).numpy()
                calls += 1
                wall = time.perf_counter() - wall0
                if wall >= seconds:
                    break
            rates.append(calls * flops_per_call / wall / 1e9)
            ratios.append((time.process_time() - cpu0) / wall)
    return {"dtype": dtype, "n": n, "gflops": round(statistics.median(rates), 1),
            "gflops_min": round(min(rates), 1), "gflops_max": round(max(rates), 1),
            "cpu_over_wall": round(statistics.median(ratios), 2)}


def fraction_of_matmul(model_gflops_per_s, matmul):
    """The model's FLOP/s as a fraction of the measured matmul rate (``None`` if unknown)."""
    if not model_gflops_per_s or not matmul or not matmul.get("gflops"):
        return None
    return round(model_gflops_per_s / matmul["gflops"], 4)
