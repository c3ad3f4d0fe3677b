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

__all__ = ["MatmulWindow", "measure_matmul_rate", "fraction_of_matmul"]


def _compute_dtype(policy_or_dtype):
    """``"mixed_bfloat16"`` -> ``"bfloat16"``; ``"float32"`` stays; a dtype name passes."""
    name = str(policy_or_dtype)
    return name[len("mixed_"):] if name.startswith("mixed_") else name


class MatmulWindow:
    """A warm ``n x n`` matmul in ``policy``'s compute dtype; each call times one window.

    Why a callable: benchmarks put it into :func:`_bench.interleaved` beside the
    model's windows, so the matmul and the model share whatever load the machine
    has at that moment (two cores shared with other jobs here). Each window records
    GFLOP/s and the process' CPU seconds over wall seconds.
    """

    def __init__(self, policy="float32", n=2048, seconds=1.0, device=None):
        import tensorflow as tf
        self.dtype, self.n, self.seconds = _compute_dtype(policy), int(n), float(seconds)
        self.device = device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")
        with tf.device(self.device):
            a = tf.random.stateless_normal((self.n, self.n), (1, 2), dtype=tf.float32)
            self._a, self._b = tf.cast(a, self.dtype), tf.cast(tf.transpose(a), self.dtype)
            self._step = tf.function(lambda x, y: tf.reduce_sum(
                tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
            for _ in range(2):  # trace + warm-up (oneDNN primitive creation)
                self._step(self._a, self._b).numpy()
        self.rates, self.cpu_over_wall = [], []

    def __call__(self):
        import tensorflow as tf
        calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
        with tf.device(self.device):
            while True:
                self._step(self._a, self._b).numpy()
                calls += 1
                wall = time.perf_counter() - wall0
                if wall >= self.seconds:
                    break
        rate = calls * 2.0 * self.n ** 3 / wall / 1e9
        self.rates.append(rate)
        self.cpu_over_wall.append((time.process_time() - cpu0) / wall)
        return rate

    def summary(self):
        """``{"dtype", "n", "gflops" (median), "gflops_min", "gflops_max", "windows",
        "cpu_over_wall" (median)}`` of the windows timed so far."""
        r = self.rates or [0.0]
        return {"dtype": self.dtype, "n": self.n, "gflops": round(statistics.median(r), 1),
                "gflops_min": round(min(r), 1), "gflops_max": round(max(r), 1),
                "windows": len(self.rates),
                "cpu_over_wall": round(statistics.median(self.cpu_over_wall or [0.0]), 2)}


def measure_matmul_rate(policy="float32", n=2048, windows=5, seconds=1.0, device=None):
    """FLOP/s of an ``n x n`` matmul in ``policy``'s compute dtype on ``device``.

    Returns :meth:`MatmulWindow.summary` after ``windows`` back-to-back windows; a
    benchmark comparing methods should interleave a :class:`MatmulWindow` instead.
    """
    window = MatmulWindow(policy, n, seconds, device)
    for _ in range(windows):
        window()
    return window.summary()


def fraction_of_matmul(model_gflops_per_s, matmul):
    """The model's FLOP/s as a fraction of the measured matmul rate (``None`` if unknown)."""
    if not model_gflops_per_s or not matmul or not matmul.get("gflops"):
        return None
    return round(model_gflops_per_s / matmul["gflops"], 4)
