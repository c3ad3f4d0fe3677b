"""The FunMatch paper's sections on Fashion-MNIST (issue 24), as fixed study configs.

Why a separate file: ``recipes/fashion_mnist.py`` holds the budget study; each
section here is one question with its own arms, written before any run so no
arm is tuned to a result. Built: 3.3 (cross-resolution), 3.4 (Shampoo vs Adam), 3.5
(initialisation, ``fashion_mnist_pretrain.py``), 3.6a (a teacher ensemble), 3.6b (a
student of another family), 3.8 (out-of-domain images, ``fashion_mnist_ood.py``); any
other name is refused.

A 3.3 / 3.6b arm is ``(method, teacher side[, student build_options])``: the student is built at the section's
``student_size`` (from scratch); teacher side 28 is the zoo teacher at its own 28 px on
the *same* crop, another side the same pretrained teacher applied to a view at that side
(it is convolutional with global pooling, as the paper's teacher-at-224 px arm is BiT at
224); ``None`` for label training.
"""

import dataclasses
import functools
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
                       "labels_mobilenet32": ("labels", None),
                       # Added after the two arms above ran: at keras.applications' BN
                       # momentum 0.999 both ended at 10.0 % (stale moving statistics,
                       # docs/fashion_mnist_study.md); 0.9 is the study CNNs' momentum.
                       "funmatch_mobilenet32_bn09": ("funmatch", 28, {"bn_momentum": 0.9}),
                       "labels_mobilenet32_bn09": ("labels", None, {"bn_momentum": 0.9})}),
    "3.4": dict(title="Shampoo vs Adam", epochs=(30, 100, 300), seeds=(0, 1, 2),
                arms=("funmatch_adam", "funmatch_shampoo")),
    "3.8": dict(title="out-of-domain images", epochs=(300,), seeds=(0, 1, 2),
                arms=("in_domain_1000", "in_domain_59000", "digits_1797", "natural_crops_59000"),
                images={"in_domain_59000": 59_000, "digits_1797": 1_797,
                        "natural_crops_59000": 59_000}),
}
SECTIONS["3.6a"] = dict(  # two teachers of one family and recipe, seeds 0 and 1 (see docs)
    title="a teacher ensemble", epochs=(300,), seeds=(0, 1, 2),
    teachers={"a": "fmnist_cnn_w32.kdzoo_teacher_full",
              "b": "fmnist_cnn_w32.kdzoo_teacher_full_seed1"},
    ensemble="sum",  # the per-teacher KLs summed: big_vision's distill trainer (docs/funmatch.md)
    arms={"funmatch_teacher_a": ("a",), "funmatch_teacher_b": ("b",),
          "funmatch_ensemble_ab": ("a", "b")})
SECTIONS["3.5"] = dict(  # the pretraining: fashion_mnist_pretrain.PRETRAIN (see docs)
    title="initialisation", epochs=(10, 30, 100, 300, 1000), seeds=(0, 1, 2),
    arms={"funmatch_scratch": None, "funmatch_pretrained": "coarse4"},
    pretraining="coarse4: the 59,000 training images outside the 1,000, labelled tops / "
                "bottoms / footwear / bags (fashion_mnist_pretrain.py)")
PLANNED = ()  # every section of issue 24 is built
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


def _models_at(s, cfg, teacher_side, build_options=None):
    """Student builder at the section's size, teacher builder at ``teacher_side``."""
    from kdzoo import load
    size = cfg["student_size"]
    extra = {"build_options": build_options} if build_options else {}
    student = functools.partial(load, cfg.get("student", s["student"]), weights=None,
                                num_classes=10, input_shape=(size, size, 1), **extra)
    return student, functools.partial(load, s["teacher"], input_shape=(teacher_side,) * 2 + (1,))


def _resized_run(s, cfg, arm, epochs, seed, workdir, method_run):
    """One run of a section's arm: student at ``student_size``, teacher per the arm."""
    method, teacher_side, *build_options = cfg["arms"][arm]
    run = method_run(s, method, epochs, seed, workdir)
    student, teacher = _models_at(s, cfg, teacher_side or 28, *build_options)
    size = cfg["student_size"]
    if method == "labels":
        return dataclasses.replace(run, image_size=size, model=student)
    return dataclasses.replace(run, image_size=size, teacher_image_size=teacher_side,
                               student=student, teacher=teacher)


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


def teacher_ensemble(names):
    """The teachers of a 3.6a ensemble arm, from the zoo, as the list FunMatchDistiller
    takes for an ensemble (a module function so a run's settings record it by name)."""
    from kdzoo import load
    return [load(name) for name in names]


def _ensemble_arm(s, arm, epochs, seed, workdir, method_run):
    """One 3.6a run: the study's funmatch run taught by teacher a, b, or both."""
    from kdzoo import load
    cfg = SECTIONS["3.6a"]
    run = method_run(s, "funmatch", epochs, seed, workdir)
    names = tuple(cfg["teachers"][t] for t in cfg["arms"][arm])
    if len(names) == 1:
        return dataclasses.replace(run, teacher=functools.partial(load, names[0]))
    return dataclasses.replace(run, teacher=functools.partial(teacher_ensemble, names),
                               distiller_kwargs=dict(run.distiller_kwargs,
                                                     ensemble=cfg["ensemble"]))


PRETRAIN_DIR = "pretrain_coarse4"  # beside the arms: <workdir>/s3.5/pretrain_coarse4


def _init_arm(s, arm, epochs, seed, workdir, method_run):
    """One 3.5 run: the study's funmatch run, its student from scratch or initialised from
    the section's pretrained network (``<workdir>/s3.5/pretrain_coarse4/model.keras``)."""
    import fashion_mnist_pretrain as pretrain
    run = method_run(s, "funmatch", epochs, seed, workdir)
    if SECTIONS["3.5"]["arms"][arm] is None:
        return run
    root = os.path.dirname(os.path.dirname(os.path.dirname(workdir)))  # <workdir>/s3.5
    model = os.path.join(root, PRETRAIN_DIR, "model.keras")
    return dataclasses.replace(run, student=functools.partial(
        pretrain.pretrained_student, model, s["student"]))


def prerequisites(s, names, workdir, method_run):
    """``{section: run}`` trained once before a section's runs (3.5: the pretraining)."""
    import fashion_mnist_pretrain as pretrain
    if "3.5" not in names:
        return {}
    labels = method_run(s, "labels", 1, 0, workdir)
    return {"3.5": pretrain.pretrain_run(s, os.path.join(workdir, "s3.5", PRETRAIN_DIR),
                                         labels)}


def missing_teachers(names):
    """The zoo cards the named sections need that this tree does not ship, with the
    command that makes each (3.6a's second teacher is trained once, like the first)."""
    from kdzoo.zoo import registry
    if "3.6a" not in names:
        return []
    return [f"{card}: python recipes/fashion_mnist_teacher.py --workdir "
            f"/tmp/fmnist_teacher_seed1 --seed 1 --card {card} --export"
            for card in SECTIONS["3.6a"]["teachers"].values()
            if card not in registry.cards()]


def _sized(name):
    return lambda s, *rest: _resized_run(s, SECTIONS[name], *rest)


BUILD = {"3.3": _sized("3.3"), "3.4": _optimizer_arm, "3.5": _init_arm, "3.6a": _ensemble_arm,
         "3.6b": _sized("3.6b"), "3.8": _ood_arm}


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
