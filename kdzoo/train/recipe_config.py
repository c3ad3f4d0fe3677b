"""A recipe run's settings, resolved once: the recipe's defaults, what ``--smoke`` puts in
their place, and the flags a user passed explicitly.

Why one place: the ``--smoke`` substitution used to be some twenty ``if smoke``
conditionals spread over :mod:`kdzoo.train.recipe`, so what a smoke run trains
could only be learnt by reading all of them. :func:`smoke_overrides` is that
substitution as one dict, and :func:`resolve` applies it; the recipe code then
reads the resolved values and no longer asks whether it is a smoke run.

Precedence: an explicit ``--epochs`` / ``--batch_size`` / ``--log_every_steps`` /
``--checkpoint_every_steps`` wins over the smoke value (a longer smoke run is
still a smoke run); everything else ``--smoke`` names (models, image sizes,
warm-up, data slice, eval batch) replaces the recipe's and the flags' values, so
a smoke run stays tiny and offline whatever else is passed.
"""

SMOKE_EXAMPLES = 8  # per split under --smoke: two steps of batch 4
SMOKE_STEPS = 2     # under --smoke a log / checkpoint interval is one pass over the data

# The values a run has when neither the recipe nor a flag says otherwise.
RUN_DEFAULTS = dict(log_every_steps=500, checkpoint_every_steps=5000, verbose="auto",
                    num_train_examples=None, mock_data=False, require_data=True)

FLAG_WINS = ("epochs", "batch_size", "log_every_steps", "checkpoint_every_steps")
METHODS = ("funmatch", "self_distill")

__all__ = ["FLAG_WINS", "RUN_DEFAULTS", "SMOKE_EXAMPLES", "SMOKE_STEPS", "resolve",
           "smoke_overrides"]


def smoke_overrides(method="funmatch", image_size=32):
    """Every value ``--smoke`` substitutes in a ``method`` recipe run (``"funmatch"`` or
    ``"self_distill"``; ``image_size`` is the self-distillation recipe's own resolution,
    at which its stand-in model is built).

    Both: :data:`SMOKE_EXAMPLES` training images on ``tfds.testing.mock_data`` (so no
    check for prepared TFDS data), 1 epoch of batch 4, eval batch 8, one progress line
    per epoch (``verbose=2``), a log / checkpoint every :data:`SMOKE_STEPS` steps.
    FunMatch: tiny BiTs for teacher and student (no ``--student_init``), 32 px, a
    cross-resolution teacher at 48 px, 2 warm-up steps. Self distillation:
    ``fmnist_cnn_w16`` (the same stage layout) at the recipe's resolution, 3 channels.
    """
    shared = dict(mock_data=True, require_data=False, num_train_examples=SMOKE_EXAMPLES,
                  epochs=1, batch_size=4, eval_batch_size=8, verbose=2,
                  log_every_steps=SMOKE_STEPS, checkpoint_every_steps=SMOKE_STEPS)
    if method == "funmatch":
        return dict(shared, teacher="tiny_bit", student="tiny_bit", student_init=None,
                    image_size=32, teacher_image_size=48, warmup_steps=2)
    if method == "self_distill":
        return dict(shared, student="fmnist_cnn_w16",
                    student_kwargs={"input_shape": (image_size, image_size, 3)})
    raise ValueError(f"smoke_overrides(method={method!r}): method must be one of {METHODS}.")


def resolve(defaults, options, smoke, method="funmatch", **overrides_kwargs):
    """``defaults`` with, under ``smoke``, the :func:`smoke_overrides` of the keys it
    holds, then the explicit :data:`FLAG_WINS` options (``None`` / 0: not passed).

    A same-size teacher (``teacher_image_size`` None) stays one under ``--smoke``: only a
    cross-resolution teacher is moved to the smoke teacher size."""
    values = dict(defaults)
    if smoke:
        for key, value in smoke_overrides(method, **overrides_kwargs).items():
            if key in values and not (key == "teacher_image_size" and values[key] is None):
                values[key] = value
    for key in FLAG_WINS:
        if key in values and getattr(options, key, None):
            values[key] = getattr(options, key)
    return values
