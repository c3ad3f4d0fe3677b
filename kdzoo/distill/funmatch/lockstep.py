"""Grid points trained in lockstep: one view stream, one teacher pass, many students.

Why: in a FunMatch grid over learning rate, weight decay and temperature
(:data:`kdzoo.train.grid.TEACHER_FREE`) every point sees the very same views, so
both the input pipeline (inception crop, flip, mixup) and the teacher's
forward pass are the same for all points. A teacher-output cache
(:func:`kdzoo.train.grid.fit_grid_from_one_cache`) shares the teacher but each point
still renders its views; :class:`LockstepGrid` shares both: each step renders
one batch of views, runs the teacher once (its logits, before any
temperature), and then updates every point's student with that point's own
temperature, optimizer and learning rate.

Each point's training is exactly what ``FunMatchDistiller.fit`` alone would
do (same views, same targets, same update, :meth:`FunMatchDistiller.student_update`);
the points' distillers keep their students and optimizers, so after
``fit`` each is evaluated, saved or checkpointed on its own. Memory holds every
point's student and optimizer state at once, and the students' steps may run
concurrently (no data dependence between them), so up to all of their
activations too: group a large grid (``kdzoo.train.grid.fit_grid_lockstep(group_size=...)``).
"""

import keras

from kdzoo.data import stream
from kdzoo.distill._checks import guard_callbacks
from kdzoo.distill.funmatch import FunMatchDistiller

__all__ = ["LockstepGrid"]


def _check_points(distillers):
    if not isinstance(distillers, (list, tuple)) or not distillers:
        raise ValueError("LockstepGrid needs a non-empty list of FunMatchDistillers.")
    for i, d in enumerate(distillers):
        if not isinstance(d, FunMatchDistiller):
            raise TypeError(f"Point {i} is a {type(d).__name__}, not a FunMatchDistiller.")
        if getattr(d, "optimizer", None) is None:
            raise ValueError(f"Point {i}'s distiller is not compiled: compile each point "
                             "with its own optimizer (learning rate, weight decay) first.")
        if d.views.fixed or d.teacher_cache is not None:
            raise ValueError(
                f"Point {i} ({d.variant}{', cached' if d.teacher_cache else ''}) reads "
                "stored targets; lockstep shares the online teacher pass. Use "
                "kdzoo.train.grid.fit_grid_from_one_cache, or fit the points one by one.")
    lead = distillers[0]
    for i, d in enumerate(distillers[1:], 1):
        if not all(a is b for a, b in zip(d.teachers, lead.teachers)) or \
                len(d.teachers) != len(lead.teachers):
            raise ValueError(f"Point {i} has another teacher than point 0; lockstep points "
                             "share one teacher (the same keras.Model objects).")
        theirs, ours = d.views.settings(), lead.views.settings()
        differ = sorted(k for k in ours if theirs[k] != ours[k])
        if d.shuffle_buffer != lead.shuffle_buffer:
            differ.append("shuffle_buffer")
        if differ:
            raise ValueError(f"Point {i} differs from point 0 in {differ}, which change the "
                             "train views; lockstep points must see the same views.")
        if d.student is lead.student:
            raise ValueError(f"Points 0 and {i} share one student model; give each point "
                             "its own (e.g. a fresh kdzoo.load or keras.models.clone_model).")


class LockstepGrid(keras.Model):
    """Train several compiled ``FunMatchDistiller`` points together, step by step.

    ``grid = LockstepGrid([d_a, d_b, ...]); grid.compile(); grid.fit(images,
    batch_size=512, epochs=E)``. The points must share the teacher (the same
    model objects) and every view setting (variant, seed, sizes, crops, mixup,
    shuffle buffer); they may differ in temperature, ``t2_scaling``, ensemble
    mode, student and optimizer. Logs carry ``point<i>_loss`` and
    ``point<i>_agreement`` per point.
    """

    def __init__(self, distillers, name="lockstep_grid", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_points(distillers)
        self.points = list(distillers)
        self.built = True

    def compile(self, **kwargs):
        """Keras ``compile`` without an optimizer: each point keeps its own."""
        if kwargs.get("optimizer") is not None or kwargs.get("loss") is not None:
            raise ValueError("LockstepGrid trains each point with the optimizer and loss "
                             "its own distiller was compiled with; pass neither here.")
        kwargs.pop("optimizer", None)
        kwargs.pop("loss", None)
        for d in self.points:  # slots exist before the step is traced
            if not d.optimizer.built:
                d.optimizer.build(d.trainable_variables)
        super().compile(optimizer=None, **kwargs)

    @property
    def metrics(self):
        return [m for d in self.points for m in (d.loss_tracker, d.agreement_tracker)]

    def call(self, inputs, training=False):
        """Every point's student on a view: a list of logits."""
        return [d(inputs, training=training) for d in self.points]

    def train_step(self, data):
        lead = self.points[0]
        view = data.get("teacher", data["student"])
        member_logits = [t(view, training=False) for t in lead.teachers]  # once per step
        logs = {}
        for i, d in enumerate(self.points):
            step = d.student_update(data["student"], d.tempered_targets(member_logits))
            logs.update({f"point{i}_{k}": v for k, v in step.items()})
        return logs

    def fit(self, images, batch_size=32, epochs=1, stop_on_non_finite_loss=True, **kwargs):
        """Keras ``fit`` of all points on raw ``images``: point 0's view stream, N // batch steps."""
        for key in ("y", "steps_per_epoch", "validation_data", "validation_split",
                    "initial_epoch"):
            if kwargs.get(key) is not None:
                raise ValueError(f"LockstepGrid.fit does not take {key}=; it runs whole "
                                 "data epochs from the start. Evaluate each point's "
                                 "distiller after fit.")
        lead = self.points[0]
        n = stream.count(stream.image_dataset(images, lead.channels, lead.image_size))
        if n is None or n < batch_size:
            raise ValueError(f"LockstepGrid.fit needs a finite set of at least batch_size="
                             f"{batch_size} train images; got {n}.")
        views = lead.make_train_dataset(images, batch_size=batch_size, num_images=n)
        kwargs["callbacks"] = guard_callbacks(kwargs.get("callbacks"), stop_on_non_finite_loss)
        return super().fit(views, epochs=epochs, steps_per_epoch=n // batch_size,
                           shuffle=False, **kwargs)
