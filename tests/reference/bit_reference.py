"""An independent NumPy BiT ResNet-v2 and a writer of checkpoints in the published layout.

Written from the published key names and the BiT paper's description, not
from kdzoo's code, so the tests compare two separate implementations.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def bit_checkpoint_shapes(depth, width, num_classes):
    """{key: shape} of a big_transfer BiT checkpoint."""
    shapes = {"resnet/root_block/standardized_conv2d/kernel": (7, 7, 3, 64 * width)}
    channels = 64 * width
    for b, units in enumerate(UNITS[depth], start=1):
        mid = 64 * width * 2 ** (b - 1)
        for u in range(1, units + 1):
            p = f"resnet/block{b}/unit{u:02d}/"
            for part, cin, kernel in (("a", channels, (1, 1, channels, mid)),
                                      ("b", mid, (3, 3, mid, mid)),
                                      ("c", mid, (1, 1, mid, 4 * mid))):
                shapes[p + f"{part}/group_norm/gamma"] = (cin,)
                shapes[p + f"{part}/group_norm/beta"] = (cin,)
                shapes[p + f"{part}/standardized_conv2d/kernel"] = kernel
            if u == 1:
                shapes[p + "a/proj/standardized_conv2d/kernel"] = (1, 1, channels, 4 * mid)
            channels = 4 * mid
    shapes["resnet/group_norm/gamma"] = (channels,)
    shapes["resnet/group_norm/beta"] = (channels,)
    shapes["resnet/head/conv2d/kernel"] = (1, 1, channels, num_classes)
    shapes["resnet/head/conv2d/bias"] = (num_classes,)
    return shapes


def random_bit_checkpoint(depth, width, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for key, shape in bit_checkpoint_shapes(depth, width, num_classes).items():
        if key.endswith("gamma"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif key.endswith(("beta", "bias")):
            value = 0.1 * rng.standard_normal(shape)
        elif "head" in key:
            value = 0.05 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) + 0.1  # non-zero mean: WS must remove it
        params[key] = value.astype(np.float32)
    return params


def to_big_vision(params):
    """Rename a big_transfer checkpoint to big_vision's bit_paper naming."""
    out = {"root_block/conv_root/kernel": params["resnet/root_block/standardized_conv2d/kernel"],
           "norm-pre-head/scale": params["resnet/group_norm/gamma"][None, None, None],
           "norm-pre-head/bias": params["resnet/group_norm/beta"][None, None, None],
           "head/kernel": params["resnet/head/conv2d/kernel"][0, 0],
           "head/bias": params["resnet/head/conv2d/bias"]}
    for key, value in params.items():
        parts = key.split("/")
        if not parts[1].startswith("block"):
            continue
        block, unit, part = parts[1], parts[2], parts[3]
        prefix = f"{block}/{unit}/"
        if parts[4] == "proj":
            out[prefix + "conv_proj/kernel"] = value
            continue
        index = "abc".index(part) + 1
        if parts[4] == "group_norm":
            name = "scale" if parts[5] == "gamma" else "bias"
            out[prefix + f"gn{index}/{name}"] = value
        else:
            out[prefix + f"conv{index}/kernel"] = value
    return out


def _standardise(kernel):
    kernel = kernel.astype(np.float64)
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    var = kernel.var(axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / np.sqrt(var + 1e-10)


def _conv(x, kernel, stride):
    kh, kw = kernel.shape[:2]
    if kh > 1:
        x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", windows, _standardise(kernel), optimize=True)


def _gn_relu(x, gamma, beta, groups=32, eps=1e-5):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    g = ((g - mean) / np.sqrt(var + eps)).reshape(n, h, w, c)
    return np.maximum(g * gamma.reshape(-1) + beta.reshape(-1), 0.0)


def bit_forward(params, images, depth, pool_pad=0.0):
    """(pre-logits features, logits) of a BiT checkpoint on [0, 255] images.

    ``pool_pad``: the stem max-pool's pad value, 0 as big_transfer, -inf as big_vision's
    ``bit_paper`` (which trained the FunMatch checkpoints)."""
    x = images.astype(np.float64) / 127.5 - 1.0
    x = _conv(x, params["resnet/root_block/standardized_conv2d/kernel"], 2)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pool_pad)  # 3x3/2 pool
    x = sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-1, -2))
    for b, units in enumerate(UNITS[depth], start=1):
        for u in range(1, units + 1):
            p = f"resnet/block{b}/unit{u:02d}/"
            stride = 2 if (u == 1 and b > 1) else 1
            pre = _gn_relu(x, params[p + "a/group_norm/gamma"], params[p + "a/group_norm/beta"])
            proj = params.get(p + "a/proj/standardized_conv2d/kernel")
            shortcut = x if proj is None else _conv(pre, proj, stride)
            y = _conv(pre, params[p + "a/standardized_conv2d/kernel"], 1)
            y = _gn_relu(y, params[p + "b/group_norm/gamma"], params[p + "b/group_norm/beta"])
            y = _conv(y, params[p + "b/standardized_conv2d/kernel"], stride)
            y = _gn_relu(y, params[p + "c/group_norm/gamma"], params[p + "c/group_norm/beta"])
            x = _conv(y, params[p + "c/standardized_conv2d/kernel"], 1) + shortcut
    x = _gn_relu(x, params["resnet/group_norm/gamma"], params["resnet/group_norm/beta"])
    features = x.mean(axis=(1, 2))
    logits = features @ params["resnet/head/conv2d/kernel"][0, 0] + params["resnet/head/conv2d/bias"]
    return features, logits
