"""Issue 24, section 3.3: the cross-resolution arms differ as the issue specifies."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))




def _method_run(s, method, epochs, seed, workdir):
    import dataclasses
    cls = dataclasses.make_dataclass("R", [("method", str), ("image_size", object, None),
                                           ("teacher_image_size", object, None)])
    return cls(method=method)


def test_cross_resolution_arms_differ_as_specified():
    import fashion_mnist_sections as sec
    entries = sec.plan_sections({}, ["3.3"], "/tmp/x", _method_run)
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 0}
    assert (by_arm["funmatch_teacher28"].image_size, by_arm["funmatch_teacher28"].teacher_image_size) == (20, 28)
    assert (by_arm["funmatch_teacher20"].image_size, by_arm["funmatch_teacher20"].teacher_image_size) == (20, 20)
    assert by_arm["labels20"].method == "labels" and by_arm["labels20"].image_size == 20
    assert len(entries) == 9  # 3 arms x 1 budget x 3 seeds


def test_unbuilt_section_is_refused_by_name():
    import fashion_mnist_sections as sec
    with pytest.raises(ValueError, match="3.4"):
        sec.plan_sections({}, ["3.4"], "/tmp/x", _method_run)
