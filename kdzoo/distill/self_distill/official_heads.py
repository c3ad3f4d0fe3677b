"""The exit heads of the official BYOT code: ``SepConv`` stacks behind attention gates.

ArchipLab-LinfengZhang/pytorch-self-distillation-final, which its README calls the
*journal* version's code, does not use the bottleneck of the ICCV paper's Fig. 2
(``ScalaNet``, ``resnet.py`` lines 100-112, is defined but never called). Its ResNets
build, for shallow exit i of 4 (``resnet.py``):

* an attention gate (lines 214-245, applied at 300-314)::

      a_i = Sigmoid(Upsample2x_bilinear(ReLU(BN(SepConv(C_i -> C_i)(f_i)))))
      g_i = a_i * f_i

  The gated maps feed only the exit; the next section takes the ungated ``f_i``
  (``x = self.layer2(x)`` at line 304 uses ``x``, not ``fea1``).
* a stack of ``SepConv`` blocks, one per section between exit i and the deepest
  one, each halving the size and moving to the next section's width: exit 1 of a
  ResNet-18 goes 64 -> 128 -> 256 -> 512 channels at 32 -> 16 -> 8 -> 4 pixels
  (``scala1..3``, lines 178-211), then ``AvgPool2d(4, 4)`` (1x1 output: kdzoo's global
  average pool) and a Linear classifier (lines 247-250, 319-327).

``SepConv(C_in, C_out, stride)`` (lines 114-130): depthwise 3x3 conv (stride, padding
1, no bias), 1x1 conv C_in -> C_in (no bias), BN, ReLU, depthwise 3x3 conv (stride
1), 1x1 conv C_in -> C_out, BN, ReLU. PyTorch pads one pixel on every side; Keras'
"same" pads a stride-2 convolution on the bottom/right only, so the stride-2
depthwise conv here is ``ZeroPadding2D(1)`` + "valid". ``Upsample(scale_factor=2,
mode='bilinear')`` uses PyTorch's default ``align_corners=False``: half-pixel
centres, which is what ``UpSampling2D(interpolation="bilinear")`` computes.

"Scale by scale": for a generic backbone, each ``SepConv`` takes the exit to the
next section's (height, width, channels); each step must halve the size (stride 2,
as every ``SepConv`` of the official heads) or keep it (stride 1).

Not reproduced: PyTorch's initialisation (``kaiming_normal_(mode='fan_out')`` for
every conv, lines 252-257); kdzoo keeps Keras' defaults, as for its other heads.
"""

import keras


def _bn(x, name):
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def sep_conv(x, filters, stride, name):
    """``resnet.py``'s ``SepConv`` (lines 114-130) with kernel 3, padding 1."""
    if stride == 2:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False,
                                         name=f"{name}_dw1")(x)
    else:
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                         name=f"{name}_dw1")(x)
    channels = int(x.shape[-1])
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(_bn(x, f"{name}_bn1"))
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                     name=f"{name}_dw2")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw2")(x)
    return keras.layers.ReLU(name=f"{name}_relu2")(_bn(x, f"{name}_bn2"))


def attention_gate(x, name):
    """``x * sigmoid(upsample2x(relu(bn(SepConv(C -> C, stride 2)(x)))))`` (lines 214-245)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    if h % 2 or w % 2:
        raise ValueError(
            f"The official exit head's attention gate halves and re-doubles the exit's "
            f"size; {h}x{w} is odd. Choose exit layers of even height and width, or "
            "head='bottleneck' / 'light'.")
    a = sep_conv(x, int(x.shape[-1]), 2, f"{name}_sep")
    a = keras.layers.ReLU(name=f"{name}_relu")(_bn(a, f"{name}_bn"))
    a = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(a)
    a = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(a)
    return keras.layers.Multiply(name=f"{name}_gate")([a, x])


def _stride_to(size, target, name):
    h, w = size
    th, tw = target
    if (h, w) == (th, tw):
        return 1
    if (-(-h // 2), -(-w // 2)) == (th, tw):
        return 2
    raise ValueError(
        f"{name}: the official exit head's SepConv blocks halve the size one section at "
        f"a time, but a section goes from {h}x{w} to {th}x{tw}. Choose exits whose sizes "
        "halve (or stay) from one section to the next, or head='bottleneck' / 'light'.")


def official_exit(x, path_shapes, name):
    """Attention gate, then one ``SepConv`` per shape in ``path_shapes``.

    ``path_shapes``: (H, W, C) of every section after this exit, shallow to deep
    (the last one is the deepest exit's); the output has the last shape.
    """
    if not path_shapes:
        raise ValueError(f"{name}: the official exit head needs the shapes of the "
                         "sections after the exit (path_shapes), got none.")
    y = attention_gate(x, f"{name}_attention")
    for step, (h, w, c) in enumerate(path_shapes, start=1):
        stride = _stride_to((int(y.shape[1]), int(y.shape[2])), (int(h), int(w)), name)
        y = sep_conv(y, int(c), stride, f"{name}_sep{step}")
    return y
