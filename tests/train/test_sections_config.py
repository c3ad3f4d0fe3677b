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


def test_unbuilt_section_is_refused_by_name():
    import fashion_mnist_sections as sec
    with pytest.raises(ValueError, match="3.4"):
        sec.plan_sections({"student": "fmnist_cnn_w16"}, ["3.4"], "/tmp/x", _method_run)


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
    assert len(entries) == 6  # 2 arms x 1 budget x 3 seeds
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
