"""The FunMatch paper's sections on Fashion-MNIST (issue 24), as fixed study configs.

Why a separate file: ``recipes/fashion_mnist.py`` holds the budget study; each
section here is one question with its own arms, written before any run so no
arm is tuned to a result. Built: 3.3 (cross-resolution), 3.4 (Shampoo vs Adam), 3.8
(out-of-domain images, ``fashion_mnist_ood.py``); the others are listed in ``PLANNED``
and refused by name.
"""

import dataclasses
import functools
import os

SECTIONS = {  # fixed before any run; see docs/fashion_mnist_study.md, "Sections"
    "3.3": dict(title="cross-resolution", epochs=(300,), seeds=(0, 1, 2), student_size=20,
                arms=("funmatch_teacher28", "funmatch_teacher20", "labels20")),
    "3.4": dict(title="Shampoo vs Adam", epochs=(30, 100, 300), seeds=(0, 1, 2),
                arms=("funmatch_adam", "funmatch_shampoo")),
    "3.8": dict(title="out-of-domain images", epochs=(300,), seeds=(0, 1, 2),
                arms=("in_domain_1000", "in_domain_59000", "digits_1797", "natural_crops_59000"),
                images={"in_domain_59000": 59_000, "digits_1797": 1_797,
                        "natural_crops_59000": 59_000}),
}
PLANNED = ("3.5", "3.6a", "3.6b")  # not yet built (issue 24)
ALL = tuple(SECTIONS) + PLANNED  # the evidence JSON is complete when every one is reported
# Section 3.4's Shampoo: kdzoo.optim.Shampoo's defaults (the reference's, except grafting,
# docs/optim.md), at the Adam arm's learning rate, schedule, clipping and decoupled decay;
# no Shampoo setting of the paper's is public (docs/fashion_mnist_study.md, "Sections").
SHAMPOO = dict(block_size=128, beta_1=0.9, beta_2=0.999, graft_type="rmsprop_normalized",
               start_preconditioning_step=5, preconditioning_compute_steps=1, nesterov=True,
               diagonal_epsilon=1e-10, matrix_epsilon=1e-6)


def shampoo(total_steps, warmup_steps, lr, weight_decay):
    """3.4's Shampoo with the Adam arm's schedule (warm-up, cosine), global clip 1.0 and
    kernel-only decoupled decay (``kdzoo.optim.paper_optimizer``'s, Keras form wd / lr)."""
    from kdzoo.optim import Shampoo, paper_schedule
    from kdzoo.optim.paper_adam import NON_KERNEL_PATTERN
    optimizer = Shampoo(learning_rate=paper_schedule(lr, total_steps, warmup_steps),
                        weight_decay=weight_decay / lr, global_clipnorm=1.0, **SHAMPOO)
    optimizer.exclude_from_weight_decay(var_names=[NON_KERNEL_PATTERN])
    return optimizer


def _models_at(s, size):
    """Student and teacher builders at ``size`` px: the teacher is the same pretrained
    network applied to the smaller view (it is convolutional with global pooling), as the
    paper's teacher-at-224 px arm is BiT at 224."""
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


def _optimizer_arm(s, arm, epochs, seed, workdir, method_run):
    """One 3.4 run: the study's funmatch run, with Adam (as is) or :func:`shampoo`."""
    run = method_run(s, "funmatch", epochs, seed, workdir)
    if arm == "funmatch_adam":
        return run
    return dataclasses.replace(run, optimizer=functools.partial(
        shampoo, lr=s["lr"], weight_decay=s["weight_decay"]))


def _ood_arm(s, arm, epochs, seed, workdir, method_run):
    """One 3.8 run: funmatch on the 1,000, or on another image source for the same number
    of *steps* (``epochs`` over the 1,000 = ``epochs x 1000 / N`` over its N images)."""
    import fashion_mnist_ood as ood
    run = method_run(s, "funmatch", epochs, seed, workdir)
    if arm == "in_domain_1000":
        return run
    n = SECTIONS["3.8"]["images"][arm]
    source = {"in_domain_59000": functools.partial(ood.outside_subset, s["train_per_class"],
                                                   s["subset_seed"]),
              "digits_1797": ood.digits, "natural_crops_59000": ood.natural_crops}[arm]
    return dataclasses.replace(  # a whole-set shuffle every epoch, as the 1,000 get
        run, train_images=source, train_per_class=None, num_train_examples=n,
        epochs=epochs * run.train_per_class * 10 / n,
        distiller_kwargs=dict(run.distiller_kwargs, shuffle_buffer=n))


BUILD = {"3.3": _cross_res, "3.4": _optimizer_arm, "3.8": _ood_arm}


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
            entries.append((key, BUILD[name](s, arm, epochs, seed, where, method_run)))
    return entries
