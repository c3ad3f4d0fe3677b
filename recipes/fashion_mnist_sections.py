"""The FunMatch paper's sections on Fashion-MNIST (issue 24), as fixed study configs.

Why a separate file: ``recipes/fashion_mnist.py`` holds the budget study; each
section here is one question with its own arms, written before any run so no
arm is tuned to a result. Only section 3.3 (cross-resolution) is built so far;
the others are listed in ``PLANNED`` and refused with a clear message.
"""

import dataclasses
import os

SECTIONS = {  # fixed before any run; see docs/fashion_mnist_study.md, "Sections"
    "3.3": dict(title="cross-resolution", epochs=(300,), seeds=(0, 1, 2), student_size=20,
                arms=("funmatch_teacher28", "funmatch_teacher20", "labels20")),
}
PLANNED = ("3.4", "3.8", "3.5", "3.6a", "3.6b")  # not yet built (issue 24)
ALL = tuple(SECTIONS) + PLANNED  # the evidence JSON is complete when every one is reported


def _models_at(s, size):
    """Student and teacher builders at ``size`` px: the teacher is the same pretrained
    network applied to the smaller view (it is convolutional with global pooling), as the
    paper's teacher-at-224 px arm is BiT at 224."""
    import functools
    from kdzoo import load
    return (functools.partial(load, s["student"], weights=None, input_shape=(size, size, 1)),
            functools.partial(load, s["teacher"], input_shape=(size, size, 1)))


def _cross_res(s, arm, epochs, seed, workdir, method_run):
    """One 3.3 run: student at 20 px; the teacher at 28 px of the same crop, or at 20 px."""
    size = SECTIONS["3.3"]["student_size"]
    run = method_run(s, "labels" if arm == "labels20" else "funmatch", epochs, seed, workdir)
    student, teacher_small = _models_at(s, size)
    if arm == "labels20":
        return dataclasses.replace(run, image_size=size, model=student)
    if arm == "funmatch_teacher28":
        return dataclasses.replace(run, image_size=size, teacher_image_size=28, student=student)
    return dataclasses.replace(run, image_size=size, teacher_image_size=size, student=student,
                               teacher=teacher_small)


def _check(names):
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"--section: {unknown} not built; built: {sorted(SECTIONS)}, "
                         f"planned: {list(PLANNED)}.")


def plan_sections(s, names, workdir, method_run):
    """``[(row key, run)]`` of the named sections, every (arm, budget, seed)."""
    _check(names)
    entries = []
    for name in names:
        cfg = SECTIONS[name]
        for seed, epochs, arm in ((a, b, c) for a in cfg["seeds"] for b in cfg["epochs"]
                                  for c in cfg["arms"]):
            where = os.path.join(workdir, f"s{name}", arm, f"e{epochs}", f"seed-{seed}")
            key = dict(section=name, arm=arm, method=arm, epochs=epochs, seed=seed)
            entries.append((key, _cross_res(s, arm, epochs, seed, where, method_run)))
    return entries
