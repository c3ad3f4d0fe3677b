"""Exit heads: what brings a section's features to the deepest section's shape.

Both heads return feature maps of the deepest section's shape (H', W', C'), which
the exit then global-average-pools and classifies with a Dense layer.

* ``"bottleneck"`` (default, the paper's Fig. 2 and ``ScalaNet`` in the authors'
  ``resnet.py`` lines 100-112): 1x1 conv to C'/ratio, a k x k conv with stride k
  (k = H / H'), 1x1 conv to C', each with BN + ReLU. At the shallow exits of a
  ResNet it costs about as much as the sections it follows (for
  ``keras.applications.ResNet50`` the exits add about 1.5x the plain network).
* ``"light"``: k x k average pooling with stride k (no multiply-adds counted), then
  a 1x1 conv to C' + BN + ReLU at the deepest, smallest resolution: a few
  percent of a section. Made for early exit; it is not the paper's head.
* ``"official"``: what the official code's ResNets use (``resnet.py`` lines 178-245,
  300-322; the README calls it the journal version): an attention gate, then one
  ``SepConv`` per following section (:mod:`kdzoo.distill.self_distill.official_heads`).
"""

import keras

HEADS = ("bottleneck", "light", "official")


def _bn(x, name):
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _conv_bn_relu(x, filters, kernel, name, strides=1, padding="valid"):
    y = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                            use_bias=False, name=name)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(_bn(y, f"{name}_bn"))


def _integer_factor(x, h, w):
    in_h, in_w = int(x.shape[1]), int(x.shape[2])
    if in_h % h == 0 and in_w % w == 0 and in_h // h == in_w // w:
        return in_h // h
    return None


def exit_bottleneck(x, target_shape, name, bottleneck_ratio=4):
    """Bring ``x`` [B, H, W, C] to ``target_shape`` (H', W', C') as in BYOT's code.

    1x1 conv to C'/ratio, a k x k conv with stride k (k = H / H'), a 1x1 conv to
    C', each followed by BN + ReLU. When H / H' is not an integer, 3x3 stride-2
    "same" convolutions halve the size until it matches.
    """
    h, w, c = (int(d) for d in target_shape)
    mid = max(1, c // bottleneck_ratio)
    y = _conv_bn_relu(x, mid, 1, f"{name}_reduce")
    k = _integer_factor(x, h, w)
    if k is not None:
        y = _conv_bn_relu(y, mid, k, f"{name}_down", strides=k)
    else:
        step = 0
        while int(y.shape[1]) > h or int(y.shape[2]) > w:
            step += 1
            y = _conv_bn_relu(y, mid, 3, f"{name}_down{step}", strides=2, padding="same")
        if (int(y.shape[1]), int(y.shape[2])) != (h, w):
            raise ValueError(
                f"Cannot bring features of spatial size {int(x.shape[1])}x"
                f"{int(x.shape[2])} to the deepest exit's {h}x{w} with strided "
                "convolutions; choose exit layers whose sizes are multiples of the "
                "deepest one's.")
    return _conv_bn_relu(y, c, 1, f"{name}_expand")


def light_exit(x, target_shape, name):
    """Average pooling to (H', W'), then 1x1 conv to C' + BN + ReLU.

    The pool is k x k with stride k = ceil(H / H') ("same" padding when H is not a
    multiple of H': the padded cells are left out of the averages).
    """
    h, w, c = (int(d) for d in target_shape)
    in_h, in_w = int(x.shape[1]), int(x.shape[2])
    k = -(-in_h // h)
    if k != -(-in_w // w) or -(-in_h // k) != h or -(-in_w // k) != w:
        raise ValueError(
            f"The light exit head cannot pool the exit's spatial size {in_h}x{in_w} to "
            f"the deepest exit's {h}x{w} with one square pool; choose other exit layers "
            "or head='bottleneck'.")
    y = x
    if k > 1:
        padding = "valid" if in_h % k == 0 and in_w % k == 0 else "same"
        y = keras.layers.AveragePooling2D(k, padding=padding, name=f"{name}_pool")(x)
    return _conv_bn_relu(y, c, 1, f"{name}_expand")


def exit_head(x, target_shape, name, head="bottleneck", bottleneck_ratio=4,
              path_shapes=None):
    """The head ``head`` (one of :data:`HEADS`) on ``x``.

    ``path_shapes`` (``head="official"`` only): the (H, W, C) of every later section,
    shallow to deep, the last being ``target_shape``; ``None``: ``[target_shape]``.
    """
    if head == "official":
        from kdzoo.distill.self_distill.official_heads import official_exit
        return official_exit(x, list(path_shapes or [target_shape]), name)
    if head == "bottleneck":
        return exit_bottleneck(x, target_shape, name, bottleneck_ratio)
    if head == "light":
        return light_exit(x, target_shape, name)
    raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
