"""Paper scale: BiT-R152x2 teacher -> BiT-R50x1 student, FunMatchDistiller vs keras Distiller.

The real architectures of Beyer et al. 2022 (random weights, 1,000 classes) at
the paper's two shapes, student/teacher resolution 128/128 and 224/384
(cross-resolution), trained through

* ``funmatch``: ``kdzoo.FunMatchDistiller.fit`` with kdzoo's defaults
  (``--precision auto``: ``kdzoo.train.precision`` picks bf16 where the hardware
  has it natively, float32 elsewhere), on batches of precomputed views
  ``{"student": 128 px, "teacher": 384 px}``;
* ``keras``: ``keras.distillation.Distiller`` + ``LogitsDistillation`` with its
  defaults (float32; ``--keras_precision`` to change), ``student_loss_weight=0``.
  It feeds one image to both models, so at 224/384 its teacher is
  ``Sequential([Resizing(384), teacher])`` on the 224 px view (same FLOPs);

both with Adam (``global_clipnorm=1``), T = 1, the same batch, steps and
``jit_compile`` (``--xla``). Input pipelines are excluded (views held in
memory). The two methods alternate window by window; figures are medians
after a warm-up window. Per method and shape it reports images/s, the peak
memory of the timed windows (CPU: peak RSS, reset through
``/proc/self/clear_refs``, which with both models resident is mostly the
shared baseline, so ``window_memory_growth_mb`` gives what a window added;
GPU: TF's peak allocator bytes), and model FLOP
utilisation: analytic FLOPs per image (2 x MACs of every conv/dense layer,
``kdzoo.distill.self_distill.early_exit.count_flops``; teacher forward + 3 x student
forward for the student's forward and backward) x images/s / the device's
peak (``--peak_tflops``; estimated from cores x clock x SIMD width on a CPU,
a table on known GPUs), and beside it ``fraction_of_matmul``: the same model
FLOP/s over what a warm 2048^2 ``tf.matmul`` reaches in the method's compute dtype,
measured in this run, its windows alternating with the models' (``_peak.py``; the
CPU estimate was off by 1.6x on the 2-vCPU machines). Checkpoints (128 px): bytes and seconds of one save
of the whole distiller (what ``ModelCheckpoint`` writes: teacher included),
and of the student alone (``kdzoo.callbacks.StudentCheckpoint``).

Prints one JSON line per shape and a final summary line whose ``ratio`` is
FunMatch / Keras images/s at 128 px (issue goal >= 1.5 on a machine with
native bf16; on one without, both run float32 and the ratio is reported with
the CPU flags).

    nice python benchmarks/paper_scale.py                # CPU: batch 2, ~10 min, 2 cores
    python benchmarks/paper_scale.py --batch 512 --xla  # GPU: the paper's batch
    python benchmarks/paper_scale.py --quick            # CI: tiny BiTs, seconds
"""

import _bench  # noqa: F401  (sys.path, TF log level)
import _peak

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdzoo import atomic  # noqa: E402
from kdzoo.train import precision
from kdzoo.distill.self_distill.early_exit import count_flops  # noqa: E402
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: E402
from kdzoo.models.bit import build_bit  # noqa: E402

T = 1.0
# Dense peak TFLOP/s by (GPU name fragment, compute dtype): vendor data sheets (SXM parts).
GPU_PEAK_TFLOPS = {("H200", "bfloat16"): 989.0, ("H100", "bfloat16"): 989.0,
                   ("A100", "bfloat16"): 312.0, ("H200", "float32"): 67.0,
                   ("H100", "float32"): 67.0, ("A100", "float32"): 19.5}


def build(which, size, quick):
    if quick:  # one BiT unit each (tracing, most of a CI run, grows with the layers);
        width, units = (1, (1,)) if which == "teacher" else (0.5, (1,))  # teacher 2x wide
        return build_bit(50, width, num_classes=100, input_shape=(size, size, 3),
                         units=units, name=f"tiny_{which}")
    if which == "teacher":
        return build_bit(152, 2, num_classes=1000, input_shape=(size, size, 3))
    return build_bit(50, 1, num_classes=1000, input_shape=(size, size, 3))


def gpu_name():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def peak_tflops(policy, override):
    """(peak TFLOP/s, how it was obtained)."""
    if override:
        return float(override), "--peak_tflops"
    compute = "bfloat16" if "bfloat16" in policy else "float32"
    name = gpu_name()
    if name:
        for (frag, dtype), value in GPU_PEAK_TFLOPS.items():
            if frag in name and dtype == compute:
                return value, f"data sheet, {name} {dtype} dense"
        return None, f"unknown GPU {name!r}: pass --peak_tflops"
    flags = precision.read_cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4  # fp32 per vector
    fma_units = 2  # two FMA pipes per core on current x86 server cores
    mhz = 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            mhz = max(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        return None, "no /proc/cpuinfo clock: pass --peak_tflops"
    cores = len(os.sched_getaffinity(0))
    peak = cores * mhz * 1e6 * lanes * 2 * fma_units / 1e12
    return peak, (f"CPU estimate: {cores} cores x {mhz:.0f} MHz x {lanes} fp32 lanes x 2 "
                  f"(FMA) x {fma_units} FMA units")


class PeakMemory:
    """Peak memory of a stretch of code: GPU allocator peak, or the process' peak RSS."""

    def __init__(self):
        self.gpu = bool(tf.config.list_physical_devices("GPU"))

    def reset(self):
        if self.gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
            except OSError:
                pass

    def current_mb(self):
        """Resident memory now (CPU) / allocated bytes now (GPU), MiB."""
        if self.gpu:
            return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2 ** 20
        try:
            with open("/proc/self/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def peak_mb(self):
        if self.gpu:
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
        try:
            with open("/proc/self/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return _bench.peak_rss_mb()


def adam():
    return keras.optimizers.Adam(1e-3, global_clipnorm=1.0)


def timed_save(save, suffix):
    """(bytes, seconds) of one atomic save into a fresh temp dir."""
    with tempfile.TemporaryDirectory(prefix="paper_scale_") as tmp:
        path = os.path.join(tmp, "ckpt" + suffix)
        start = time.perf_counter()
        with atomic.atomic_path(path, suffix) as part:
            save(part)
        seconds = time.perf_counter() - start
        return os.path.getsize(path), round(seconds, 2)


def one_shape(args, student_size, teacher_size, fm_policy, kd_policy, peaks, memory, matmul):
    quick, batch = args.quick, args.batch
    keras.utils.set_random_seed(0)
    models = {}
    for policy in sorted({fm_policy, kd_policy}):
        keras.mixed_precision.set_global_policy(policy)
        try:
            models[policy] = (build("teacher", teacher_size, quick),
                              build("student", student_size, quick))
        finally:
            keras.mixed_precision.set_global_policy("float32")
    ref_t, ref_s = models[fm_policy]
    for t, s in models.values():  # the same weights under every policy
        if t is not ref_t:
            t.set_weights(ref_t.get_weights())
            s.set_weights(ref_s.get_weights())
    init = ref_s.get_weights()
    rng = np.random.default_rng(0)
    n = args.steps * batch
    sv = rng.uniform(0, 255, (n, student_size, student_size, 3)).astype("float32")
    fm_data = {"student": sv}
    if teacher_size != student_size:
        fm_data["teacher"] = tf.image.resize(sv, [teacher_size, teacher_size]).numpy()
    fm_ds = tf.data.Dataset.from_tensor_slices(fm_data).batch(batch).repeat()
    kd_ds = tf.data.Dataset.from_tensor_slices(sv).batch(batch).repeat()

    teacher, student = models[fm_policy]
    fm = FunMatchDistiller(teacher, student, image_size=student_size,
                           teacher_image_size=teacher_size, temperature=T)
    fm.compile(optimizer=adam(), jit_compile=args.xla)
    kd_teacher, kd_student = models[kd_policy]
    if kd_student is student:  # same policy: the Keras run gets its own student copy
        keras.mixed_precision.set_global_policy(kd_policy)
        kd_student = build("student", student_size, quick)
        keras.mixed_precision.set_global_policy("float32")
    kd_student.set_weights(init)
    kd_teacher.trainable = False
    if teacher_size != student_size:
        kd_teacher = keras.Sequential([keras.Input((student_size, student_size, 3)),
                                       keras.layers.Resizing(teacher_size, teacher_size),
                                       kd_teacher], name="resize_then_teacher")
    kd = keras.distillation.Distiller(
        teacher=kd_teacher, student=kd_student,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=T),
        student_loss_weight=0.0)
    kd.compile(optimizer=adam(), loss="sparse_categorical_crossentropy",
               jit_compile=args.xla)
    t0 = time.perf_counter()
    fm.fit(fm_ds, steps_per_epoch=1, epochs=1, verbose=0)  # trace, compile
    kd.fit(kd_ds, steps_per_epoch=1, epochs=1, verbose=0)
    compile_s = round(time.perf_counter() - t0, 1)

    mem = {"funmatch": 0.0, "keras": 0.0}
    growth = {"funmatch": 0.0, "keras": 0.0}

    def runner(name, fit):
        def run():
            memory.reset()
            before = memory.current_mb()
            rate = _bench.timed(fit, n)
            peak = memory.peak_mb()
            mem[name] = max(mem[name], peak)
            growth[name] = max(growth[name], peak - before)
            return rate
        return run

    rates = _bench.interleaved({
        "funmatch": runner("funmatch", lambda: fm.fit(fm_ds, steps_per_epoch=args.steps,
                                                      epochs=1, verbose=0)),
        "keras": runner("keras", lambda: kd.fit(kd_ds, steps_per_epoch=args.steps,
                                                epochs=1, verbose=0)),
        **{f"matmul {p}": window for p, window in matmul.items()},  # same load, same run
    }, args.windows, warmup=0 if quick else 1)  # quick: the compile fits above warmed up
    rates = {k: v for k, v in rates.items() if not k.startswith("matmul ")}
    med = {k: _bench.median(v) for k, v in rates.items()}
    mm = {p: window.summary() for p, window in matmul.items()}
    flops = {"teacher_forward": count_flops(teacher), "student_forward": count_flops(student)}
    per_image = flops["teacher_forward"] + 3 * flops["student_forward"]
    record = {
        "shape": f"{student_size}/{teacher_size}",
        "images_per_s": {k: round(v, 3) for k, v in med.items()},
        "window_images_per_s": {k: [round(r, 3) for r in v] for k, v in rates.items()},
        "ratio_funmatch_over_keras": round(med["funmatch"] / med["keras"], 3),
        "peak_memory_mb": {k: round(v, 1) for k, v in mem.items()},
        "window_memory_growth_mb": {k: round(v, 1) for k, v in growth.items()},
        "gflops_per_image": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "train_gflops_per_image": round(per_image / 1e9, 2),
        "achieved_tflops": {k: round(v * per_image / 1e12, 4) for k, v in med.items()},
        "mfu": {k: (round(v * per_image / 1e12 / peaks[p][0], 4) if peaks[p][0] else None)
                for (k, v), p in zip(med.items(), (fm_policy, kd_policy))},
        "fraction_of_matmul": {
            k: _peak.fraction_of_matmul(v * per_image / 1e9, mm[p])
            for (k, v), p in zip(med.items(), (fm_policy, kd_policy))},
        "matmul_gflops": {p: v["gflops"] for p, v in mm.items()},
        "compile_s": compile_s,
        "params_m": {"teacher": round(teacher.count_params() / 1e6, 1),
                     "student": round(student.count_params() / 1e6, 1)},
    }
    return record, fm, kd


def checkpoints(fm, kd, quick):
    """Bytes and seconds of one save: whole distillers vs the student alone."""
    out = {}
    kinds = (("funmatch_whole_keras", lambda p: fm.save(p), ".keras"),
             ("funmatch_student_keras", lambda p: fm.student.save(p), ".keras"),
             ("funmatch_whole_weights", lambda p: fm.save_weights(p), ".weights.h5"),
             ("funmatch_student_weights", lambda p: fm.student.save_weights(p), ".weights.h5"),
             ("keras_whole_keras", lambda p: kd.save(p), ".keras"),
             ("keras_whole_weights", lambda p: kd.save_weights(p), ".weights.h5"))
    for name, save, suffix in kinds:
        if quick and "weights" in name:
            continue
        try:
            size, seconds = timed_save(save, suffix)
            out[name] = {"bytes": size, "seconds": seconds}
        except Exception as e:  # e.g. a distiller that cannot serialise: report it
            out[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    return out


def main():
    args = _bench.parse_args(
        __doc__,
        batch=dict(type=int, default=None, help="global batch (CPU default 2; paper 512)"),
        steps=dict(type=int, default=None, help="steps per timed window"),
        windows=dict(type=int, default=None, help="timed windows per method"),
        precision=dict(default="auto", help="FunMatch policy (default auto)"),
        keras_precision=dict(default="float32", help="keras Distiller policy"),
        xla=dict(action="store_true", help="jit_compile=True for both"),
        shapes=dict(default=None, help="comma list student/teacher, e.g. 128/128,224/384"),
        peak_tflops=dict(type=float, default=None, help="device peak for MFU"),
        no_checkpoints=dict(action="store_true", help="skip the checkpoint saves"))
    quick = args.quick
    args.batch = args.batch or 2
    args.steps = args.steps or (1 if quick else 2)
    args.windows = args.windows or (1 if quick else 2)
    shapes = args.shapes or ("32/48" if quick else "128/128,224/384")  # quick: one trace each
    shapes = [tuple(int(v) for v in s.split("/")) for s in shapes.split(",")]
    fm_policy = precision.resolve_precision(args.precision)
    kd_policy = precision.resolve_precision(args.keras_precision)
    peaks = {p: peak_tflops(p, args.peak_tflops) for p in {fm_policy, kd_policy}}
    memory = PeakMemory()
    # The measured limit: a warm 2048^2 matmul per policy, its windows between the models'.
    matmul = {p: _peak.MatmulWindow(p, 2048, seconds=0.3 if quick else 1.0)
              for p in sorted({fm_policy, kd_policy})}
    flags = precision.read_cpu_flags()
    common = {"batch": args.batch, "steps_per_window": args.steps, "windows": args.windows,
              "xla": args.xla, "funmatch_policy": fm_policy, "keras_policy": kd_policy,
              "auto_reason": precision.describe()["reason"] if args.precision == "auto"
              else None, "quick": quick}
    summary, ckpt = {}, None
    for student_size, teacher_size in shapes:
        record, fm, kd = one_shape(args, student_size, teacher_size, fm_policy, kd_policy,
                                   peaks, memory, matmul)
        if ckpt is None and not args.no_checkpoints:
            ckpt = checkpoints(fm, kd, quick)
            record["checkpoint"] = ckpt
        print(json.dumps({"benchmark": "paper_scale_shape", **record, **common}), flush=True)
        summary[record["shape"]] = record
        del fm, kd
        keras.backend.clear_session()
    first = summary[f"{shapes[0][0]}/{shapes[0][1]}"]
    whole = (ckpt or {}).get("funmatch_whole_keras", {}).get("bytes")
    alone = (ckpt or {}).get("funmatch_student_keras", {}).get("bytes")
    _bench.emit({
        "benchmark": "paper_scale",
        "ratio": first["ratio_funmatch_over_keras"],
        "goal": 1.5,
        "ratio_by_shape": {k: v["ratio_funmatch_over_keras"] for k, v in summary.items()},
        "images_per_s_by_shape": {k: v["images_per_s"] for k, v in summary.items()},
        "mfu_by_shape": {k: v["mfu"] for k, v in summary.items()},
        "fraction_of_matmul": first["fraction_of_matmul"],
        "fraction_of_matmul_by_shape": {k: v["fraction_of_matmul"] for k, v in summary.items()},
        "matmul_gflops": {p: w.summary()["gflops"] for p, w in matmul.items()},
        "matmul": {p: w.summary() for p, w in matmul.items()},
        "peak_memory_mb_by_shape": {k: v["peak_memory_mb"] for k, v in summary.items()},
        "checkpoint_whole_over_student_bytes": (round(whole / alone, 1) if whole and alone
                                                else None),
        "peak_tflops": {p: v[0] and round(v[0], 2) for p, v in peaks.items()},
        "peak_source": {p: v[1] for p, v in peaks.items()},
        "device": (gpu_name() or f"CPU ({platform.processor() or platform.machine()}, "
                   f"{len(os.sched_getaffinity(0))} cores)"),
        "cpu_bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "cpu_has_avx512f": "avx512f" in flags, "cpu_has_avx2": "avx2" in flags,
        "models": ("tiny BiTs (quick)" if quick else "BiT-R152x2 teacher, BiT-R50x1 student"),
        "what": "FunMatchDistiller.fit (kdzoo defaults) / keras.distillation.Distiller.fit "
                "(its defaults) images/s at the first shape",
        **common,
    })


if __name__ == "__main__":
    main()
