"""Apply gradients with the global-norm clip computed on the *whole* batch's gradient.

Keras clips ``global_clipnorm`` inside ``optimizer.apply``, which under
``tf.distribute`` runs on each replica's share of the gradient before the
replicas are summed: with two replicas the clip then acts on two half-batch
gradients and training differs from one device (measured in
tests/train/test_train.py). The paper clips the full gradient (global norm 1.0), so
our train steps clip here instead: all-reduce the gradient, compute one clip
factor from its global norm, scale each replica's share by it, and let the
optimizer sum and apply them with its own clipping switched off for that call.
"""

import tensorflow as tf


def apply_with_global_clip(optimizer, grads, variables):
    """``optimizer.apply(grads, variables)`` with replica-consistent global-norm clipping."""
    clipper = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    clipnorm = getattr(clipper, "global_clipnorm", None)
    if not clipnorm:
        optimizer.apply(grads, variables)
        return
    context = tf.distribute.get_replica_context()
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    dense = [tf.convert_to_tensor(g) if g is not None else None for g in grads]
    present = [g for g in dense if g is not None]
    if replicas > 1 and context is not None:
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
    else:
        total = present
    # Under a LossScaleOptimizer the gradients carry the loss scale: clip the true norm.
    norm = tf.linalg.global_norm(total) / tf.cast(optimizer.scale_loss(1.0), tf.float32)
    factor = clipnorm / tf.maximum(norm, clipnorm)  # == tf.clip_by_global_norm's factor
    scaled = [None if g is None else g * tf.cast(factor, g.dtype) for g in dense]
    clipper.global_clipnorm = None  # read while tracing: this apply does not clip again
    try:
        optimizer.apply(scaled, variables)
    finally:
        clipper.global_clipnorm = clipnorm
