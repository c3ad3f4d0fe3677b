"""The tiny Keras models the tests share, one parameterised builder per idea.

Why one place: the same "few-thousand-parameter convnet on uint8 images" and the same
"1-unit CIFAR ResNet" were written out in five test files, each a little differently.
Tests whose figures depend on an exact architecture (layer order, rescaling, how weights
are initialised) pass that as parameters, so every model is the one the test had before.
The tiny BiT is the library's own ``kdzoo.models.bit.tiny_bit`` (the recipes' smoke model).

Import as ``from helpers import tiny_convnet`` (tests/conftest.py puts tests/ on sys.path,
as for ``reference``); a subprocess script needs tests/ on its own sys.path.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


class Probe(keras.layers.Layer):
    """Identity that remembers the last batch it saw (in a variable, so it works in graphs)."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.seen = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                    name="seen")

    def call(self, x):
        self.seen.assign(ops.cast(x, "float32"))
        return x


class CallCounter(keras.layers.Layer):
    """Identity that counts the images it was run on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     name="count")

    def call(self, x):
        self.count.assign_add(ops.cast(ops.shape(x)[0], "float32"))
        return x


def tiny_convnet(size=16, classes=5, channels=3, name=None, *, width=8, convs=2,
                 scale=1 / 127.5, offset=-1.0, padding="same", relu="layer",
                 kernel_initializer=None, batchnorm=False, seed=None, probe_batch=None,
                 counter=False):
    """Rescaling, ``convs`` stride-2 3x3 convs (``width``, ``2 * width``, ...), GAP, Dense.

    A classifier of uint8 images small enough to train a few steps in a test.
    ``relu``: ``"layer"`` (a ReLU layer after each conv), ``"fused"`` (the conv's
    ``activation="relu"``) or ``None`` (linear convs). ``kernel_initializer=None`` shares one
    ``GlorotUniform(seed)`` across every layer (so ``seed`` fixes the weights without
    touching the global seed); pass ``"glorot_uniform"`` for Keras' per-layer default.
    ``batchnorm`` adds BatchNormalization after the first conv and Dropout(0.3) before
    the head. ``probe_batch`` / ``counter`` put a :class:`Probe` / :class:`CallCounter` in
    front, reachable as ``model.extra["probe"]`` / ``model.extra["counter"]``.
    """
    if relu not in ("layer", "fused", None):
        raise ValueError(f"relu must be 'layer', 'fused' or None, got {relu!r}")
    inputs = keras.Input((size, size, channels))
    x = inputs
    extra = {}
    if probe_batch:
        extra["probe"] = Probe((probe_batch, size, size, channels))
        x = extra["probe"](x)
    if counter:
        extra["counter"] = CallCounter()
        x = extra["counter"](x)
    init = (keras.initializers.GlorotUniform(seed=seed) if kernel_initializer is None
            else kernel_initializer)
    x = keras.layers.Rescaling(scale, offset=offset)(x)
    for i in range(convs):
        x = keras.layers.Conv2D(width * 2 ** i, 3, strides=2, padding=padding,
                                kernel_initializer=init,
                                activation="relu" if relu == "fused" else None)(x)
        if batchnorm and i == 0:
            x = keras.layers.BatchNormalization()(x)
        if relu == "layer":
            x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if batchnorm:
        x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(classes, kernel_initializer=init)(x)
    model = keras.Model(inputs, x, name=name)
    model.extra = extra
    return model


def tiny_cifar_resnet(base_width=4, blocks=(1, 1, 1, 1), input_shape=(28, 28, 1),
                      num_classes=10, name="cifar_resnet"):
    """A basic-block CIFAR ResNet with ``blocks`` units per section (the zoo's code).

    The defaults are the runner tests' Fashion-MNIST model; ``blocks=(2, 2, 2, 2)``,
    ``input_shape=(32, 32, 3)``, ``name="cifar_resnet18"`` is the zoo's ``cifar_resnet18``
    at ``base_width``.
    """
    from kdzoo.models.cifar_resnet import cifar_resnet
    return cifar_resnet(tuple(blocks), False, num_classes=num_classes,
                        input_shape=input_shape, base_width=base_width, name=name)


def smooth_images(n, size, channels=3, seed=0):
    """Low-frequency random uint8 images (so resampling at two resolutions agrees)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (n, 5, 5, channels)).astype("float32")
    big = tf.image.resize(small, [size, size], method="bicubic").numpy()
    return np.clip(big.round(), 0, 255).astype("uint8")


def weights_of(model):
    """Copies of every weight of ``model`` (to compare before / after a fit)."""
    return [np.array(v.numpy()) for v in model.weights]
