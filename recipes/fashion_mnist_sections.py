"""The FunMatch paper's sections on Fashion-MNIST (issue 24), as fixed study configs.

Why a separate file: ``recipes/fashion_mnist.py`` holds the budget study; each
section here is one question with its own arms, written before any run so no
arm is tuned to a result. Built: 3.3 (cross-resolution) and 3.6b (a student of
another family); the others are listed in ``PLANNED`` and refused with a clear
message.

An arm is ``(method, teacher side)``: the student is built at the section's
``student_size`` (from scratch); ``teacher side`` 28 is the zoo teacher at its
own 28 px on the *same* crop, any other side the same pretrained teacher applied
to a view at that side (it is convolutional with global pooling, as the paper's
teacher-at-224 px arm is BiT at 224); ``None`` for label training.
"""

import dataclasses
import os

SECTIONS = {  # fixed before any run; see docs/fashion_mnist_study.md, "Sections"
    "3.3": dict(title="cross-resolution", epochs=(300,), seeds=(0, 1, 2), student_size=20,
                arms={"funmatch_teacher28": ("funmatch", 28),
                      "funmatch_teacher20": ("funmatch", 20), "labels20": ("labels", None)}),
    # MobileNetV3 needs >= 32 px; at 32 px mobilenet_v3_small costs 4.19 MFLOPs, the CNN
    # student 4.09 at 28 px. The teacher sees the same crop at its own 28 px.
    "3.6b": dict(title="a student of another family", epochs=(300,), seeds=(0, 1, 2),
                 student="mobilenet_v3_small", student_size=32,
                 arms={"funmatch_mobilenet32": ("funmatch", 28),
                       "labels_mobilenet32": ("labels", None)}),
}
PLANNED = ("3.4", "3.8", "3.5", "3.6a")  # not yet built (issue 24)


def _models_at(s, cfg, teacher_side):
    """Student builder at the section's size, teacher builder at ``teacher_side``."""
    import functools
    from kdzoo import load
    size = cfg["student_size"]
    student = functools.partial(load, cfg.get("student", s["student"]), weights=None,
                                num_classes=10, input_shape=(size, size, 1))
    return student, functools.partial(load, s["teacher"], input_shape=(teacher_side,) * 2 + (1,))


def _resized_run(s, cfg, arm, epochs, seed, workdir, method_run):
    """One run of a section's arm: student at ``student_size``, teacher per the arm."""
    method, teacher_side = cfg["arms"][arm]
    run = method_run(s, method, epochs, seed, workdir)
    student, teacher = _models_at(s, cfg, teacher_side or 28)
    size = cfg["student_size"]
    if method == "labels":
        return dataclasses.replace(run, image_size=size, model=student)
    return dataclasses.replace(run, image_size=size, teacher_image_size=teacher_side,
                               student=student, teacher=teacher)


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
            entries.append((key, _resized_run(s, cfg, arm, epochs, seed, where, method_run)))
    return entries
