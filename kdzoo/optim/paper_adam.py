"""The paper's optimizer (Beyer et al. 2022 / big_vision): Adam, warm-up + cosine, clip 1.0.

``paper_optimizer(learning_rate, total_steps, warmup_steps, weight_decay)``:

* schedule: linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``,
  then cosine decay to 0 at ``total_steps``
  (``keras.optimizers.schedules.CosineDecay`` with its ``warmup_*`` arguments);
* ``global_clipnorm=1.0`` (clip by the global norm of all gradients);
* Adam with beta_1=0.9, beta_2=0.999, epsilon=1e-8 (optax's defaults);
* decoupled weight decay on **kernels only** (not biases nor norm scales/offsets).

Weight-decay convention (the one kdzoo's flags and recipes use): ``weight_decay``
is the paper's / big_vision's decoupled ``wd``, whose update is
``-schedule(t) * (lr * adam_direction + wd * w)``: scaled by the schedule's
multiplier but *not* by the learning rate. Keras' ``AdamW`` multiplies its
``weight_decay`` by the current learning rate ``lr * schedule(t)``, so we pass
``weight_decay = wd / lr`` to it; the resulting update is identical.
``weight_decay=0`` gives plain Adam.
"""

import keras

# A variable takes weight decay iff its name ends in "kernel" (Dense, Conv,
# DepthwiseConv...). The pattern below matches every *other* name, and Keras
# excludes variables whose name matches it. (The TensorFlow backend checks the
# underlying tf.Variable, named like "dense/kernel:0", hence the optional suffix.)
NON_KERNEL_PATTERN = r"^(?!.*kernel(:\d+)?$)"


def paper_schedule(learning_rate, total_steps, warmup_steps=0, end_fraction=0.0):
    """Linear warm-up 0 -> ``learning_rate`` over ``warmup_steps``, then cosine to 0.

    The cosine reaches ``end_fraction * learning_rate`` at ``total_steps``.
    """
    total_steps, warmup_steps = int(total_steps), int(warmup_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps), got {warmup_steps} "
                         f"with total_steps={total_steps}.")
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=float(learning_rate), decay_steps=total_steps,
            alpha=float(end_fraction))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total_steps - warmup_steps,
        alpha=float(end_fraction), warmup_target=float(learning_rate),
        warmup_steps=warmup_steps)


def paper_optimizer(learning_rate, total_steps, warmup_steps=0, weight_decay=0.0,
                    global_clipnorm=1.0, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """Adam (or kernel-only decoupled AdamW) with the paper's schedule and clipping.

    Args:
        learning_rate: peak learning rate (after warm-up).
        total_steps: length of the whole schedule in optimizer steps.
        warmup_steps: linear warm-up steps (paper: 1500 small sets, 5000 ImageNet).
        weight_decay: the paper's decoupled ``wd`` (see the module docstring),
            applied to kernels only; 0 for plain Adam.
        global_clipnorm: clip gradients by their global norm (paper: 1.0).
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    schedule = paper_schedule(learning_rate, total_steps, warmup_steps)
    common = dict(learning_rate=schedule, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                  global_clipnorm=global_clipnorm)
    if not weight_decay:
        return keras.optimizers.Adam(**common)
    optimizer = keras.optimizers.AdamW(weight_decay=weight_decay / learning_rate, **common)
    optimizer.exclude_from_weight_decay(var_names=[NON_KERNEL_PATTERN])
    return optimizer
