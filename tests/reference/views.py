"""A test helper: a ViewMaker's rendered views and their boxes in one dict."""


def views_and_boxes(vm, image, index, epoch):
    """train_views + train_boxes of one image, with the teacher's view always rendered."""
    v = dict(vm.train_views(image, index, epoch), **vm.train_boxes(image, index, epoch))
    if "teacher_box" in v and "teacher" not in v:
        v["teacher"] = vm.render_teacher(image, v["teacher_box"], v["teacher_flip"])
    return v
