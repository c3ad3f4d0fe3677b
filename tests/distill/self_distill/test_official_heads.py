"""head="official": the official BYOT code's SepConv + attention exit heads.

The reference is ArchipLab-LinfengZhang/pytorch-self-distillation-final ``resnet.py``
(commit 47ca93b): ``SepConv`` lines 114-130, ``scala1..3`` 178-211, ``attention1..3``
214-245, the forward 300-322. The NumPy forward below is written from those lines
(PyTorch semantics: padding 1 on every side, bilinear upsampling with
``align_corners=False``), not from kdzoo's code; only the weights are read from the
Keras layers.
"""

import numpy as np
import pytest

import keras

from kdzoo.distill.self_distill.official_heads import official_exit
from kdzoo.distill.self_distill import SelfDistillation
from kdzoo.models.common import stage_marker

EPS = 1e-5


# ----------------------------------------------------------------- numpy reference

def np_depthwise(x, kernel, stride):
    """PyTorch Conv2d(C, C, 3, stride, padding=1, groups=C, bias=False); x [H, W, C]."""
    h, w, c = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    oh, ow = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    out = np.zeros((oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            patch = xp[i * stride:i * stride + 3, j * stride:j * stride + 3, :]
            out[i, j] = (patch * kernel[:, :, :, 0]).sum(axis=(0, 1))
    return out


def np_bn(x, gamma, beta, mean, var):
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def np_upsample2x_bilinear(x):
    """PyTorch Upsample(scale_factor=2, mode='bilinear'), align_corners=False."""
    h, w, _ = x.shape

    def axis(n_in):
        src = np.maximum((np.arange(2 * n_in) + 0.5) / 2 - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    (r0, r1, fr), (c0, c1, fc) = axis(h), axis(w)
    rows = x[r0] * (1 - fr)[:, None, None] + x[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def np_sep_conv(x, weights, prefix, stride):
    """SepConv: dw3x3(stride) -> 1x1 -> BN -> ReLU -> dw3x3 -> 1x1 -> BN -> ReLU."""
    y = np_depthwise(x, weights[f"{prefix}_dw1"][0], stride)
    y = y @ weights[f"{prefix}_pw1"][0][0, 0]
    y = np.maximum(np_bn(y, *weights[f"{prefix}_bn1"]), 0)
    y = np_depthwise(y, weights[f"{prefix}_dw2"][0], 1)
    y = y @ weights[f"{prefix}_pw2"][0][0, 0]
    return np.maximum(np_bn(y, *weights[f"{prefix}_bn2"]), 0)


def np_official_exit(x, weights):
    """attention gate (lines 214-223, 300-301), then scala: SepConv x 2 (lines 194-204)."""
    a = np_sep_conv(x, weights, "h_attention_sep", 2)
    a = np.maximum(np_bn(a, *weights["h_attention_bn"]), 0)
    a = 1 / (1 + np.exp(-np_upsample2x_bilinear(a)))
    y = a * x
    y = np_sep_conv(y, weights, "h_sep1", 2)
    return np_sep_conv(y, weights, "h_sep2", 2)


def test_one_official_head_matches_a_numpy_forward():
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(1)
    inp = keras.Input((8, 8, 3))
    head = keras.Model(inp, official_exit(inp, [(4, 4, 4), (2, 2, 6)], "h"))
    weights = {}
    for layer in head.layers:
        if not layer.weights:
            continue
        values = [rng.randn(*w.shape) * 0.5 for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            values[3] = rng.uniform(0.5, 2.0, values[3].shape)  # variances > 0
        layer.set_weights(values)
        weights[layer.name] = values
    x = rng.randn(2, 8, 8, 3)
    got = np.asarray(head(x.astype("float32"), training=False))
    assert got.shape == (2, 2, 2, 6)
    want = np.stack([np_official_exit(row, weights) for row in x])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The stride-2 convolutions pad like PyTorch (one pixel on every side): Keras'
    # "same" would pad bottom/right only and give other numbers.
    assert np.abs(want).max() > 0.1


# ----------------------------------------------------------------- parameter count

def stub_resnet18_sections(num_classes=100):
    """The official ResNet-18's section shapes (32x32x64 .. 4x4x512), nothing else."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(64, 1)(inp)
    for s, c in enumerate((64, 128, 256, 512), start=1):
        if s > 1:
            x = keras.layers.Conv2D(c, 1, strides=2)(x)
        x = stage_marker(x, s)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="head")(x))


def torch_sepconv_params(c_in, c_out):
    # resnet.py 118-127: Conv2d(c_in, c_in, 3, groups=c_in, bias=False) -> weight
    # [c_in, 1, 3, 3]; Conv2d(c_in, c_in, 1, bias=False) -> [c_in, c_in, 1, 1];
    # BatchNorm2d(c_in, affine=True) -> weight + bias [c_in] each; the same again
    # with the second 1x1 conv [c_out, c_in, 1, 1] and BatchNorm2d(c_out).
    return (c_in * 1 * 3 * 3 + c_in * c_in * 1 * 1 + 2 * c_in
            + c_in * 1 * 3 * 3 + c_out * c_in * 1 * 1 + 2 * c_out)


def test_official_heads_have_the_pytorch_parameter_count():
    keras.utils.set_random_seed(0)
    m = SelfDistillation(stub_resnet18_sections(), num_classes=100, head="official")
    # resnet18: BasicBlock.expansion = 1 (resnet.py line 17)
    torch_heads = {
        # scala1 (178-192): SepConv 64->128, 128->256, 256->512; attention1 (214-223):
        # SepConv 64->64 + BatchNorm2d(64) (weight + bias)
        1: (torch_sepconv_params(64, 128) + torch_sepconv_params(128, 256)
            + torch_sepconv_params(256, 512) + torch_sepconv_params(64, 64) + 2 * 64),
        # scala2 (194-204) + attention2 (225-234)
        2: (torch_sepconv_params(128, 256) + torch_sepconv_params(256, 512)
            + torch_sepconv_params(128, 128) + 2 * 128),
        # scala3 (205-211) + attention3 (236-245)
        3: torch_sepconv_params(256, 512) + torch_sepconv_params(256, 256) + 2 * 256,
    }
    # written out for exit 3: 2304+65536+512+2304+131072+1024 + 2304+65536+512+2304+65536
    # +512 + 512
    assert torch_heads[3] == 339968
    layers = {layer.name: layer for layer in m.network.layers}
    for i, expected in torch_heads.items():
        head_layers = [l for n, l in layers.items() if n.startswith(f"exit{i}_official_")]
        trainable = sum(int(np.prod(w.shape)) for l in head_layers
                        for w in l.trainable_weights)
        assert trainable == expected, i
        # BN running statistics: PyTorch buffers, Keras non-trainable weights.
        n_bn_channels = sum(int(l.weights[0].shape[0]) for l in head_layers
                            if isinstance(l, keras.layers.BatchNormalization))
        assert sum(int(np.prod(w.shape)) for l in head_layers
                   for w in l.non_trainable_weights) == 2 * n_bn_channels
        # fc1..fc3 (lines 247-249): Linear(512, 100)
        fc = layers[f"exit{i}_classifier"]
        assert sum(int(np.prod(w.shape)) for w in fc.weights) == 512 * 100 + 100
    assert "exit4_official_sep1_dw1" not in layers  # scala4 is AvgPool2d only (212)


def test_official_head_gates_only_the_exit_and_errors_clearly():
    """The next section takes the ungated features (resnet.py 300-304)."""
    keras.utils.set_random_seed(0)
    m = SelfDistillation(stub_resnet18_sections(), num_classes=100, head="official")
    gate = m.network.get_layer("exit1_official_attention_gate")
    stage1 = m.network.get_layer("stage1")
    consumers = {node.operation.name for node in stage1._outbound_nodes}
    assert gate.name in consumers
    assert any(n.startswith("conv2d") for n in consumers)  # section 2 reads stage1 itself
    inp = keras.Input((6, 6, 8))
    with pytest.raises(ValueError, match="halve the size one section at a time"):
        official_exit(inp, [(2, 2, 8)], "bad")
    odd = keras.Input((7, 7, 8))
    with pytest.raises(ValueError, match="is odd"):
        official_exit(odd, [(4, 4, 8)], "odd")


@pytest.mark.slow
def test_official_heads_survive_a_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    m = SelfDistillation(stub_resnet18_sections(10), num_classes=10, head="official")
    x = np.random.RandomState(2).rand(2, 32, 32, 3).astype("float32")
    path = str(tmp_path / "m.keras")
    m.save(path)
    back = keras.saving.load_model(path)
    assert back.head == "official"
    for a, b in zip(m(x), back(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
