"""Issue 24, section 3.3: the cross-resolution arms differ as the issue specifies."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))




def _method_run(s, method, epochs, seed, workdir):
    import dataclasses
    cls = dataclasses.make_dataclass("R", [("method", str), ("image_size", object, None),
                                           ("teacher_image_size", object, None),
                                           ("model", object, None), ("student", object, None),
                                           ("teacher", object, None)])
    return cls(method=method)


def test_cross_resolution_arms_differ_as_specified():
    import fashion_mnist_sections as sec
    entries = sec.plan_sections({"student": "fmnist_cnn_w16", "teacher": "t"}, ["3.3"], "/tmp/x", _method_run)
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 0}
    assert (by_arm["funmatch_teacher28"].image_size, by_arm["funmatch_teacher28"].teacher_image_size) == (20, 28)
    assert (by_arm["funmatch_teacher20"].image_size, by_arm["funmatch_teacher20"].teacher_image_size) == (20, 20)
    assert by_arm["labels20"].method == "labels" and by_arm["labels20"].image_size == 20
    assert len(entries) == 9  # 3 arms x 1 budget x 3 seeds


def test_unknown_section_is_refused_by_name():
    import fashion_mnist_sections as sec
    for name in ("3.7", "3.9", "3.6"):
        with pytest.raises(ValueError, match=rf"\['{name}'\] not built"):
            sec.plan_sections({"student": "fmnist_cnn_w16"}, ["3.3", name], "/tmp/x",
                              _method_run)


def test_cross_resolution_runs_build_their_distiller_at_the_students_size():
    """The real recipe's runs: the 20 px arms get a 20 px student (a 28 px student made
    FunMatchDistiller refuse image_size=20 at the first real 3.3 run), the teacher its own
    28 px or 20 px, and the distiller accepts both."""
    import fashion_mnist as fm
    import fashion_mnist_sections as sec
    from kdzoo.distill import FunMatchDistiller
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    entries = sec.plan_sections(fm.settings(), ["3.3"], "/tmp/x", fm.method_run)
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 0}
    assert by_arm["labels20"].model().input_shape == (None, 20, 20, 1)
    for arm, teacher_side in (("funmatch_teacher28", 28), ("funmatch_teacher20", 20)):
        run = by_arm[arm]
        student, teacher = run.student(), run.teacher()
        assert student.input_shape == (None, 20, 20, 1)
        assert teacher.input_shape[1:3] == (teacher_side, teacher_side)
        d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=20,
                              teacher_image_size=run.teacher_image_size)
        assert d.image_size == 20
    assert by_arm["funmatch_teacher20"].teacher_image_size == 20


def test_another_family_student_is_a_mobilenet_near_the_cnn_students_flops():
    """3.6b: MobileNetV3-Small at 32 px (its minimum) from scratch, the teacher at its own
    28 px of the same crop; FLOPs within 10 % of the CNN student's at 28 px."""
    import fashion_mnist as fm
    import fashion_mnist_sections as sec
    from kdzoo.distill import FunMatchDistiller, count_flops
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    entries = sec.plan_sections(fm.settings(), ["3.6b"], "/tmp/x", fm.method_run)
    assert len(entries) == 12  # 4 arms x 1 budget x 3 seeds
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 0}
    labels, fun = by_arm["labels_mobilenet32"], by_arm["funmatch_mobilenet32"]
    mobile = labels.model()
    assert mobile.name.startswith("mobilenet_v3_small") and mobile.input_shape == (None, 32, 32, 1)
    assert mobile.output_shape == (None, 10)  # not the card's 1,000 ImageNet classes
    cnn = fm.method_run(fm.settings(), "labels", 300, 0, "/tmp/y").model()
    assert abs(count_flops(mobile) / count_flops(cnn) - 1) < 0.1
    student, teacher = fun.student(), fun.teacher()
    assert teacher.input_shape == (None, 28, 28, 1) and fun.teacher_image_size == 28
    assert FunMatchDistiller(teacher, student, variant="funmatch", image_size=32,
                             teacher_image_size=28).image_size == 32


def test_the_bn09_arms_differ_from_the_first_two_only_in_batch_norm_momentum():
    """3.6b's added arms: every batch norm of the student at momentum 0.9 (the first
    arms keep keras.applications' 0.999), nothing else about the run changed."""
    import dataclasses
    import keras
    import fashion_mnist as fm
    import fashion_mnist_sections as sec
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    by_arm = {k["arm"]: r for k, r in sec.plan_sections(fm.settings(), ["3.6b"], "/tmp/x",
                                                          fm.method_run) if k["seed"] == 0}
    for old, new, builder in (("labels_mobilenet32", "labels_mobilenet32_bn09", "model"),
                              ("funmatch_mobilenet32", "funmatch_mobilenet32_bn09",
                               "student")):
        a, b = getattr(by_arm[old], builder)(), getattr(by_arm[new], builder)()
        bn = lambda m: [l.momentum for l in m.layers
                        if isinstance(l, keras.layers.BatchNormalization)]
        assert len(bn(a)) == len(bn(b)) > 30
        assert set(bn(a)) == {0.999} and set(bn(b)) == {0.9}
        assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
        fields = {f.name for f in dataclasses.fields(by_arm[old])} - {builder, "workdir"}
        assert all(getattr(by_arm[old], f) == getattr(by_arm[new], f) for f in fields
                   if not callable(getattr(by_arm[old], f))), fields


def test_mobilenet_refuses_a_bn_momentum_outside_0_1():
    import kdzoo
    with pytest.raises(ValueError, match="bn_momentum"):
        kdzoo.load("mobilenet_v3_small", weights=None, input_shape=(32, 32, 1),
                   build_options={"bn_momentum": 1.5})


def _real(names):
    import fashion_mnist as fm
    import fashion_mnist_sections as sec
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    return fm.settings(), sec.plan_sections(fm.settings(), names, "/tmp/x", fm.method_run)


def test_shampoo_arm_differs_from_adam_only_in_its_optimizer():
    import kdzoo
    from kdzoo.optim import Shampoo
    from kdzoo.train import plan, run_dir
    s, entries = _real(["3.4"])
    assert len(entries) == 18  # 2 arms x 3 budgets x 3 seeds
    pairs = {}
    for key, run in entries:
        pairs.setdefault((key["epochs"], key["seed"]), {})[key["arm"]] = run
    for (epochs, seed), arms in pairs.items():
        adam, sh = arms["funmatch_adam"], arms["funmatch_shampoo"]
        mine, theirs = run_dir.settings_of(adam), run_dir.settings_of(sh)
        assert adam.optimizer is None and theirs["optimizer"]["callable"].endswith(".shampoo")
        assert {k for k in mine if mine[k] != theirs[k]} == {"optimizer"}
        assert (adam.epochs, adam.seed, adam.variant) == (epochs, seed, "funmatch")
    total, warmup = plan(pairs[(300, 0)]["funmatch_shampoo"])[0].total_steps, 117
    assert total == 2344  # by hand: round(300 * 1000 / 128)
    opt = pairs[(300, 0)]["funmatch_shampoo"].optimizer(total, warmup)
    assert isinstance(opt, Shampoo) and opt.global_clipnorm == 1.0
    assert opt.weight_decay == pytest.approx(1e-4 / 3e-3)
    assert float(opt._learning_rate(warmup)) == pytest.approx(3e-3, rel=1e-3)  # warm-up done
    assert float(opt._learning_rate(total)) == pytest.approx(0.0, abs=1e-9)     # cosine to 0
    student = kdzoo.load("fmnist_cnn_w16", weights=None)
    opt.build(student.trainable_variables)
    decayed = {v.path for v in student.trainable_variables if opt._use_weight_decay(v)}
    assert decayed and all(p.endswith("kernel") for p in decayed)


def test_out_of_domain_arms_run_the_in_domain_number_of_steps():
    from kdzoo.train import plan
    s, entries = _real(["3.8"])
    assert len(entries) == 12  # 4 arms x 3 seeds
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 0}
    assert by_arm["in_domain_1000"].train_images is None
    for arm, n in (("in_domain_1000", 1000), ("in_domain_59000", 59_000),
                   ("digits_1797", 1_797), ("natural_crops_59000", 59_000)):
        _, info = plan(by_arm[arm])
        assert (info["train_examples"], info["total_steps"]) == (n, 2344), arm
        assert info["warmup_steps"] == 117 and by_arm[arm].variant == "funmatch"
    assert by_arm["digits_1797"].distiller_kwargs["shuffle_buffer"] == 1797
