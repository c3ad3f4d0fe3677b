"""PyTorch's SGD in Keras, and the self-distillation paper's CIFAR schedule.

``TorchSGD`` reproduces ``torch.optim.SGD(params, lr, momentum, weight_decay)``
(dampening 0) step for step::

    g   = grad + weight_decay * w         # coupled L2: added before momentum
    buf = momentum * buf + g              # buf = g at the first step
    w   = w - lr * buf

Keras' ``SGD(weight_decay=...)`` is different in two ways: its decay is decoupled
(``w -= lr * wd * w`` outside the momentum, so about ``1 / (1 - momentum)`` = 10x
weaker in steady state at momentum 0.9), and its momentum buffer accumulates
``lr * grad``, so a learning-rate drop only takes full effect once the buffer
has decayed. Like ``net.parameters()`` in the authors' ``train.py`` (lines 109
and 142), the decay applies to every trainable variable: kernels, biases and
BatchNorm scales and offsets.

``official_schedule`` is ``train.py``'s epoch loop (lines 114-119): the learning
rate is divided by 10 at the start of epochs ``epochs // 3``, ``2 * epochs // 3`` and
``epochs - 10`` (83, 166 and 240 of the default 250), as a per-step Keras schedule.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kdzoo")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with PyTorch's momentum and coupled (L2) weight decay.

    Args:
      learning_rate: a float or a ``keras.optimizers.schedules`` schedule.
      momentum: PyTorch's ``momentum`` (0 for plain SGD).
      weight_decay: PyTorch's ``weight_decay``: L2 coefficient added to the
        gradient of every trainable variable before the momentum.
      nesterov: PyTorch's ``nesterov`` (``w -= lr * (g + momentum * buf)``).
      **kwargs: ``keras.optimizers.Optimizer`` arguments (``global_clipnorm``...);
        Keras' own decoupled ``weight_decay`` is not available here.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False,
                 name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for arg, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"TorchSGD {arg} must be a number >= 0 (PyTorch's "
                                 f"{arg}), got {value!r}.")
        if momentum >= 1:
            raise ValueError(f"TorchSGD momentum must be < 1, got {momentum}.")
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = [self.add_variable_from_reference(v, "momentum")
                                 for v in variables] if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            g = ops.add(g, ops.multiply(ops.cast(self.coupled_weight_decay, variable.dtype),
                                        variable))
        if not self.momentum:
            self.assign_sub(variable, ops.multiply(lr, g))
            return
        buf = self.momentum_buffers[self._get_variable_index(variable)]
        m = ops.cast(self.momentum, variable.dtype)
        self.assign(buf, ops.add(ops.multiply(m, buf), g))
        step = ops.add(g, ops.multiply(m, buf)) if self.nesterov else buf
        self.assign_sub(variable, ops.multiply(lr, step))

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.coupled_weight_decay,
                      nesterov=self.nesterov)
        return config


def official_lr_per_epoch(epochs=250, learning_rate=0.1):
    """The learning rate of each epoch, exactly as ``train.py``'s loop sets it."""
    milestones = [epochs // 3, epochs * 2 // 3, epochs - 10]
    rates, lr = [], float(learning_rate)
    for epoch in range(epochs):
        if epoch in milestones:
            lr /= 10
        rates.append(lr)
    return rates


def official_schedule(steps_per_epoch, epochs=250, learning_rate=0.1):
    """A per-step ``PiecewiseConstantDecay`` of :func:`official_lr_per_epoch`.

    Keras passes the number of updates applied so far (0 at the first step); step
    ``s`` belongs to epoch ``s // steps_per_epoch``.
    """
    if int(steps_per_epoch) < 1 or int(epochs) < 1:
        raise ValueError(f"steps_per_epoch and epochs must be >= 1, got "
                         f"{steps_per_epoch} and {epochs}.")
    rates = official_lr_per_epoch(int(epochs), learning_rate)
    boundaries, values = [], [rates[0]]
    for epoch in range(1, len(rates)):
        if rates[epoch] != rates[epoch - 1]:
            boundaries.append(epoch * int(steps_per_epoch) - 1)  # <= boundary: old value
            values.append(rates[epoch])
    if not boundaries:
        return rates[0]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
