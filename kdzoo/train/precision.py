"""``mixed_precision="auto"``: bfloat16 where the hardware runs it natively, float32 elsewhere.

The fastest Keras dtype policy depends on the machine. bf16 halves memory
traffic and doubles matrix throughput only where the chip has bf16 arithmetic:
NVIDIA GPUs of compute capability >= 8 (Ampere and later: A100, H100, H200,
RTX 30xx/40xx), TPUs, and CPUs with AVX-512 BF16 (``avx512_bf16``: Cooper Lake,
Sapphire Rapids, AMD Zen 4 and later) or AMX (``amx_bf16``: Sapphire Rapids and
later); on Arm, the ``bf16`` feature (Armv8.6, e.g. Graviton 3). Elsewhere bf16
is emulated and slower than float32: on an AVX2-only CPU ``benchmarks/precision.py``
measured bf16 without XLA several times slower. ``mixed_float16`` is never
chosen automatically (it needs loss scaling and can overflow; ask for it).

Everything is injectable (``cpu_flags=``, ``accelerators=``) so the choice can be
tested against any machine's description, not only the one running the test.
"""

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo "flags"
ARM_BF16_FEATURE = "bf16"  # aarch64 /proc/cpuinfo "Features"
MIN_GPU_CAPABILITY = (8, 0)

__all__ = ["resolve_precision", "describe", "read_cpu_flags", "detect_accelerators",
           "AUTO", "POLICIES"]


def read_cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (x86 ``flags`` / Arm ``Features`` lines) as a set.

    An unreadable file (not Linux) gives an empty set: no native bf16 assumed.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def detect_accelerators():
    """``[{"type": "GPU", "compute_capability": (8, 0)}, {"type": "TPU"}, ...]`` seen by TF."""
    import tensorflow as tf  # lazy: the flag logic needs no TF

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except Exception:  # some builds cannot describe a device: treat it as unknown
            details = {}
        found.append({"type": "GPU", "name": details.get("device_name", gpu.name),
                      "compute_capability": details.get("compute_capability")})
    for tpu in tf.config.list_physical_devices("TPU"):
        found.append({"type": "TPU", "name": tpu.name})
    return found


def _cpu_has_bf16(flags):
    flags = {f.lower() for f in flags}
    hits = [f for f in CPU_BF16_FLAGS if f in flags]
    if ARM_BF16_FEATURE in flags:
        hits.append(ARM_BF16_FEATURE)
    return hits


def describe(cpu_flags=None, accelerators=None):
    """``{"policy", "reason", ...}``: the "auto" choice and why (for logs and ``--dry_run``).

    Accelerators decide when present (the model runs there): bf16 only if every
    GPU has compute capability >= 8.0, or on TPUs. Without one, the CPU flags do.
    """
    if accelerators is None:
        accelerators = detect_accelerators()
    gpus = [a for a in accelerators if a.get("type") == "GPU"]
    tpus = [a for a in accelerators if a.get("type") == "TPU"]
    if tpus:
        return {"policy": "mixed_bfloat16", "reason": f"{len(tpus)} TPU device(s)"}
    if gpus:
        caps = [tuple(g["compute_capability"]) if g.get("compute_capability") else None
                for g in gpus]
        if all(c is not None and c >= MIN_GPU_CAPABILITY for c in caps):
            return {"policy": "mixed_bfloat16",
                    "reason": f"GPU compute capability {min(caps)} >= 8.0"}
        return {"policy": "float32",
                "reason": f"GPU compute capability {caps} (bf16 needs >= 8.0 on every GPU)"}
    if cpu_flags is None:
        cpu_flags = read_cpu_flags()
    hits = _cpu_has_bf16(cpu_flags)
    if hits:
        return {"policy": "mixed_bfloat16", "reason": f"CPU flags {hits}"}
    return {"policy": "float32",
            "reason": "CPU without native bf16 (no avx512_bf16 / amx_bf16 / bf16 flag)"}


def resolve_precision(value=AUTO, cpu_flags=None, accelerators=None):
    """The Keras dtype policy name for ``value``.

    ``value``: ``"auto"`` (see :func:`describe`), ``None`` (float32, Keras' own
    default) or a policy name, returned as is (pass one to override the choice).
    """
    if value is None:
        return "float32"
    if not isinstance(value, str) or value not in POLICIES + (AUTO,):
        raise ValueError(f"mixed_precision must be one of {POLICIES + (AUTO,)} or None, "
                         f"got {value!r}.")
    if value != AUTO:
        return value
    return describe(cpu_flags, accelerators)["policy"]

