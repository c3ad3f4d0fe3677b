"""mixed_precision="auto": the choice against given CPU flags and accelerators, not this machine's.

Run: python -m pytest tests/train/test_precision.py -q
"""

import keras
import pytest

from kdzoo.train import precision
from kdzoo.train import set_precision

# /proc/cpuinfo excerpts (flags abridged to the relevant tail).
THIS_MACHINE_KIND = ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 ssse3 "
                     "fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 sha_ni vaes vpclmulqdq\n")
ZEN4 = ("processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu avx avx2 avx512f "
        "avx512dq avx512_bf16 avx512_vnni vaes\n\nprocessor\t: 1\nflags\t\t: fpu avx2 "
        "avx512f avx512_bf16\n")
SAPPHIRE_RAPIDS = ("model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f "
                   "amx_bf16 amx_tile amx_int8\n")
SKYLAKE_AVX512 = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: avx2 avx512f avx512bw\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve i8mm bf16 rng\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


@pytest.mark.parametrize("cpuinfo, expected", [
    (THIS_MACHINE_KIND, "float32"),
    (ZEN4, "mixed_bfloat16"),
    (SAPPHIRE_RAPIDS, "mixed_bfloat16"),
    (SKYLAKE_AVX512, "float32"),  # AVX-512 without its BF16 extension
    (GRAVITON3, "mixed_bfloat16"),
    (GRAVITON2, "float32"),
    ("", "float32"),
], ids=["avx2_epyc", "zen4", "sapphire_rapids", "skylake", "graviton3", "graviton2", "empty"])
def test_auto_follows_the_cpu_flags(tmp_path, cpuinfo, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    flags = precision.read_cpu_flags(str(path))
    assert precision.resolve_precision("auto", cpu_flags=flags, accelerators=[]) == expected


def test_read_cpu_flags_reads_every_flags_and_features_line(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN4 + GRAVITON3)
    flags = precision.read_cpu_flags(str(path))
    assert {"avx512_bf16", "avx512_vnni", "fp", "bf16", "i8mm"} <= flags
    assert "AMD" not in flags and "2100.00" not in flags  # other lines are not flags
    assert precision.read_cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize("accelerators, expected", [
    ([{"type": "GPU", "compute_capability": (9, 0)}], "mixed_bfloat16"),  # H100/H200
    ([{"type": "GPU", "compute_capability": (8, 0)}], "mixed_bfloat16"),  # A100
    ([{"type": "GPU", "compute_capability": (7, 0)}], "float32"),  # V100: no bf16 units
    ([{"type": "GPU", "compute_capability": (8, 6)},
      {"type": "GPU", "compute_capability": (7, 5)}], "float32"),  # the slowest decides
    ([{"type": "GPU", "compute_capability": None}], "float32"),  # unknown: not assumed
    ([{"type": "TPU"}], "mixed_bfloat16"),
])
def test_accelerators_decide_before_the_cpu(accelerators, expected):
    # A bf16-capable host CPU must not matter once the model runs on the accelerator.
    zen4 = {"avx512_bf16", "avx512f"}
    assert precision.resolve_precision("auto", cpu_flags=zen4,
                                       accelerators=accelerators) == expected
    assert precision.describe(set(), accelerators)["policy"] == expected


def test_explicit_values_pass_and_bad_ones_are_named():
    for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert precision.resolve_precision(policy, cpu_flags=set(), accelerators=[]) == policy
    assert precision.resolve_precision(None) == "float32"
    with pytest.raises(ValueError, match="mixed_precision must be one of.*'bf16'"):
        precision.resolve_precision("bf16")
    reason = precision.describe({"amx_bf16"}, [])["reason"]
    assert "amx_bf16" in reason


def test_set_precision_auto_applies_this_machines_choice():
    try:
        policy = set_precision("auto")
        assert policy == precision.describe()["policy"]
        assert keras.mixed_precision.global_policy().name == policy
    finally:
        keras.mixed_precision.set_global_policy("float32")
