"""Issue 24, sections 3.5 (initialisation) and 3.6a (a teacher ensemble): the plans, the
coarse labelling and its images, the pretrained student's weights, the ensemble's targets
and loss, and tiny real runs of both."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")
sys.path.insert(0, RECIPES)
TEACHER_A = "fmnist_cnn_w32.kdzoo_teacher_full"
OTHER_CARD = "fmnist_cnn_w16.kdzoo_small_funmatch"  # a shipped 10-class model, stands in for b


def _plan(names, workdir="/tmp/x"):
    import fashion_mnist as fm
    import fashion_mnist_sections as sec
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    s = fm.settings()
    return fm, s, sec.plan_sections(s, names, str(workdir), fm.method_run)


def _differing(a, b):
    from kdzoo.train import run_dir
    x, y = run_dir.settings_of(a), run_dir.settings_of(b)
    return {k for k in x if x[k] != y[k]}


def test_init_plan_is_two_arms_five_budgets_three_seeds_over_the_studys_funmatch_run():
    fm, s, entries = _plan(["3.5"])
    assert len(entries) == 30
    assert {k["arm"] for k, _ in entries} == {"funmatch_scratch", "funmatch_pretrained"}
    assert sorted({k["epochs"] for k, _ in entries}) == [10, 30, 100, 300, 1000]
    assert sorted({k["seed"] for k, _ in entries}) == [0, 1, 2]
    for key, run in entries:
        study = fm.method_run(s, "funmatch", key["epochs"], key["seed"], run.workdir)
        expected = set() if key["arm"] == "funmatch_scratch" else {"student"}
        assert _differing(study, run) == expected, key
    pre = [r for k, r in entries if k["arm"] == "funmatch_pretrained"][0]
    assert pre.student.keywords == {} and pre.student.args == (
        "/tmp/x/s3.5/pretrain_coarse4/model.keras", "fmnist_cnn_w16")


def test_ensemble_plan_is_teacher_a_b_and_both_over_the_studys_funmatch_run():
    fm, s, entries = _plan(["3.6a"])
    assert len(entries) == 9 and {k["epochs"] for k, _ in entries} == {300}
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 1}
    study = fm.method_run(s, "funmatch", 300, 1, "/tmp/elsewhere")
    a, b, ab = (by_arm[f"funmatch_{x}"] for x in ("teacher_a", "teacher_b", "ensemble_ab"))
    assert _differing(study, a) == set()  # teacher a is the study's own teacher
    assert a.workdir != b.workdir and _differing(a, b) == {"teacher"}
    assert b.teacher.args == ("fmnist_cnn_w32.kdzoo_teacher_full_seed1",)
    assert _differing(a, ab) == {"teacher", "distiller_kwargs"}
    assert ab.teacher.args == ((TEACHER_A, "fmnist_cnn_w32.kdzoo_teacher_full_seed1"),)
    assert ab.distiller_kwargs == dict(a.distiller_kwargs, ensemble="sum")


def test_coarse_labelling_is_tops_bottoms_footwear_bags():
    import fashion_mnist_pretrain as pretrain
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]  # Fashion-MNIST's class ids 0..9
    groups = {"tops": {"T-shirt/top", "Pullover", "Coat", "Shirt"},
              "bottoms": {"Trouser", "Dress"}, "footwear": {"Sandal", "Sneaker", "Ankle boot"},
              "bags": {"Bag"}}
    order = ["tops", "bottoms", "footwear", "bags"]
    mine = [order.index(next(g for g in order if n in groups[g])) for n in names]
    assert list(pretrain.FINE_TO_COARSE) == mine
    assert list(pretrain.COARSE) == order


def test_pretraining_images_are_the_train_set_minus_the_subset_with_coarse_labels():
    import fashion_mnist_pretrain as pretrain
    from kdzoo.data import fashion_mnist
    from kdzoo.train import train_examples
    _, _, entries = _plan(["3.5"])
    scratch = [r for k, r in entries if k["arm"] == "funmatch_scratch"][0]
    subset, n = train_examples(scratch)  # the runner's own 1,000
    subset = np.stack([x for x, _ in subset.as_numpy_iterator()])
    images, labels = pretrain.coarse_outside_subset()
    (train, fine), (test, _) = fashion_mnist.load("train"), fashion_mnist.load("test")
    assert n == 1000 and images.shape == (59_000, 28, 28, 1) and labels.shape == (59_000,)
    key = lambda a: sorted(x.tobytes() for x in a)  # noqa: E731  (a multiset of images)
    assert key(np.concatenate([subset, images])) == key(train)  # train images only, minus 1,000
    assert set(labels.tolist()) == {0, 1, 2, 3}  # coarse labels, never the 10 classes
    fine_of = {}
    for x, y in zip(train, fine):
        fine_of.setdefault(x.tobytes(), set()).add(int(y))
    coarse = {0: 0, 2: 0, 4: 0, 6: 0, 1: 1, 3: 1, 5: 2, 7: 2, 9: 2, 8: 3}
    checked = 0
    for x, y in zip(images, labels):
        f = fine_of[x.tobytes()]
        if len(f) == 1:  # an image that appears once (or with one label) in the train set
            assert coarse[f.pop()] == y
            checked += 1
    assert checked > 58_000
    test_bytes = {x.tobytes() for x in test}
    assert sum(x.tobytes() in test_bytes for x in images) < 100  # pixel-equal duplicates only


def test_pretraining_run_is_the_teacher_recipe_on_the_coarse_task():
    import fashion_mnist_sections as sec
    from kdzoo.train import plan
    fm, s, _ = _plan(["3.5"])
    (run,) = sec.prerequisites(s, ["3.5"], "/tmp/x", fm.method_run).values()
    assert run.workdir == "/tmp/x/s3.5/pretrain_coarse4" and run.method == "labels"
    assert (run.seed, run.epochs, run.batch_size, run.crop, run.eval_roles) == (
        0, 30, 128, "pad", ())
    assert run.model().output_shape == (None, 4)
    assert run.train_images.func.__name__ == "coarse_outside_subset"
    _, info = plan(run)
    assert (info["train_examples"], info["total_steps"]) == (59_000, 13_828)  # 30*59000/128
    opt = run.optimizer(13_828)
    assert float(opt._learning_rate(500)) == pytest.approx(3e-3, rel=1e-3)  # 500 warm-up steps
    assert not sec.prerequisites(s, ["3.6a"], "/tmp/x", fm.method_run)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A real pretraining, shrunk to 2 steps of batch 8, in a section work directory."""
    import fashion_mnist_pretrain as pretrain
    import fashion_mnist_sections as sec
    root = tmp_path_factory.mktemp("sections")
    fm, s, _ = _plan(["3.5"], root)
    (run,) = sec.prerequisites(s, ["3.5"], str(root), fm.method_run).values()
    import functools
    short = functools.partial(run.optimizer.func, **dict(run.optimizer.keywords, warmup_steps=1))
    run = dataclasses.replace(run, num_train_examples=16, epochs=1, batch_size=8,
                              log_every_steps=1, checkpoint_every_steps=2, optimizer=short,
                              checkpoint_every_minutes=None)
    record = pretrain.ensure_pretrained(run, "python the-command")
    return dict(root=root, run=run, record=record, s=s, fm=fm)


def test_pretraining_is_recorded_and_not_retrained(pretrained):
    import fashion_mnist_pretrain as pretrain
    record, run = pretrained["record"], pretrained["run"]
    assert record["command"] == "python the-command" and record["seed"] == 0
    assert record["total_steps"] == 2 and 0 <= record["coarse_test_top1"] <= 100
    assert record["fine_to_coarse"] == [0, 1, 0, 1, 0, 2, 0, 2, 3, 2]
    assert json.load(open(os.path.join(run.workdir, "config.json")))["train_images"][
        "callable"] == "fashion_mnist_pretrain.coarse_outside_subset"
    stamp = os.path.getmtime(os.path.join(run.workdir, "model.keras"))
    assert pretrain.ensure_pretrained(run, "another command") == record  # the cache
    assert os.path.getmtime(os.path.join(run.workdir, "model.keras")) == stamp


def test_the_init_arm_loads_every_pretrained_tensor_but_a_fresh_head(pretrained):
    import keras
    import kdzoo
    import fashion_mnist_sections as sec
    entries = sec.plan_sections(pretrained["s"], ["3.5"], str(pretrained["root"]),
                                pretrained["fm"].method_run)
    by_arm = {k["arm"]: r for k, r in entries if k["seed"] == 0 and k["epochs"] == 10}
    source = keras.saving.load_model(os.path.join(pretrained["run"].workdir, "model.keras"))
    student, scratch = by_arm["funmatch_pretrained"].student(), by_arm["funmatch_scratch"].student()
    fresh = kdzoo.load("fmnist_cnn_w16", weights=None)
    compared = 0
    for layer in student.layers:
        if not layer.weights:
            continue
        if layer.name == "head":
            assert layer.kernel.shape == (64, 10)
            assert source.get_layer("head").kernel.shape == (64, 4)
            continue
        for mine, theirs, new in zip(layer.weights, source.get_layer(layer.name).weights,
                                     fresh.get_layer(layer.name).weights):
            assert np.array_equal(np.asarray(mine), np.asarray(theirs)), mine.path
            compared += 1
    assert compared == 6 * 5  # 6 convs + 6 batch norms (gamma, beta, mean, variance)
    kernel = lambda m: np.asarray(m.get_layer("s1_conv1").kernel)  # noqa: E731
    assert not np.array_equal(kernel(student), kernel(scratch))
    assert not np.array_equal(kernel(student), kernel(fresh))


def test_a_missing_pretrained_network_is_a_clear_error(tmp_path):
    import fashion_mnist_pretrain as pretrain
    with pytest.raises(FileNotFoundError, match="section 3.5.*--section 3.5"):
        pretrain.pretrained_student(str(tmp_path / "none" / "model.keras"))


def test_a_tiny_init_run_trains_from_the_pretrained_student(pretrained):
    import fashion_mnist_sections as sec
    from kdzoo.train import study
    entries = sec.plan_sections(pretrained["s"], ["3.5"], str(pretrained["root"]),
                                pretrained["fm"].method_run)
    run = [r for k, r in entries if k["arm"] == "funmatch_pretrained" and k["seed"] == 0
           and k["epochs"] == 10][0]
    run = dataclasses.replace(run, epochs=1, train_per_class=2, batch_size=8, warmup_steps=1,
                              log_every_steps=1, checkpoint_every_steps=2, eval_roles=(),
                              checkpoint_every_minutes=None)
    assert study.run_one(run) and study.is_finished(run)
    record = json.load(open(os.path.join(run.workdir, "config.json")))
    assert record["student"]["callable"] == "fashion_mnist_pretrain.pretrained_student"


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_ensemble_targets_and_loss_are_the_two_teachers_as_computed_here():
    """The ensemble arm's distiller: each teacher's softmax, their mean, and the summed
    per-teacher KLs (big_vision's), against NumPy on real test images."""
    import kdzoo
    import fashion_mnist_sections as sec
    from kdzoo.data import fashion_mnist
    from kdzoo.distill import FunMatchDistiller
    _, _, entries = _plan(["3.6a"])
    arm = [r for k, r in entries if k["arm"] == "funmatch_ensemble_ab"][0]
    teachers = sec.teacher_ensemble((TEACHER_A, OTHER_CARD))  # b's card is not trained yet
    assert [t.name for t in teachers] == ["fmnist_cnn_w32", "fmnist_cnn_w16"]
    student = kdzoo.load("fmnist_cnn_w16", weights=None)
    d = FunMatchDistiller(teachers, student, image_size=28, **arm.distiller_kwargs)
    x = fashion_mnist.load("test")[0][:64].astype("float32")
    za, zb = (kdzoo.load(n).predict(x, verbose=0) for n in (TEACHER_A, OTHER_CARD))
    pa, pb = _softmax(za), _softmax(zb)
    targets = np.asarray(d.teacher_member_probs(x))
    assert targets.shape == (64, 2, 10)
    np.testing.assert_allclose(targets, np.stack([pa, pb], 1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(d.teacher_probs(x)), (pa + pb) / 2, atol=1e-5)
    logits = np.asarray(student(x)).astype("float64")
    log_q = logits - logits.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    kl = lambda p: np.sum(p * (np.log(p) - log_q), -1)  # noqa: E731
    want = np.mean(kl(pa) + kl(pb))  # T = 1: the T**2 factor is 1
    assert float(d.distill_loss(targets, logits)) == pytest.approx(want, rel=1e-4)


def test_the_teachers_record_measures_each_teacher_and_their_mean():
    import kdzoo
    import fashion_mnist_sections_report as sreport
    from kdzoo.data import fashion_mnist
    images, labels = fashion_mnist.load("test")
    cfg = {"teachers": {"a": TEACHER_A, "b": OTHER_CARD}}
    got = sreport.teachers_record(cfg, images, labels)
    za, zb = (kdzoo.load(n).predict(images, batch_size=1000, verbose=0)
              for n in (TEACHER_A, OTHER_CARD))
    assert got["a"]["top1"] == pytest.approx(100 * np.mean(za.argmax(-1) == labels))
    assert got["a"]["top1"] == pytest.approx(93.1, abs=0.05)  # its card
    assert got["b"]["top1"] == pytest.approx(100 * np.mean(zb.argmax(-1) == labels))
    mean = (_softmax(za) + _softmax(zb)).argmax(-1)
    assert got["ensemble_top1"] == pytest.approx(100 * np.mean(mean == labels))
    missing = sreport.teachers_record({"teachers": {"a": TEACHER_A, "b": "fmnist_cnn_w32.nope"}},
                                      images, labels)
    assert missing["b"]["top1"] is None and missing["ensemble_top1"] is None


TEACHER_B = "fmnist_cnn_w32.kdzoo_teacher_full_seed1"
# Runs a recipe in a process whose zoo lacks teacher b's card (the tree ships it now).
WITHOUT_B = ("import runpy, sys; from kdzoo.zoo import registry; real = registry.cards; "
             "registry.cards = lambda: {k: v for k, v in real().items() if k != %r}; "
             "sys.path.insert(0, %r); sys.argv = [%r] + sys.argv[1:]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")


def test_sections_refuse_to_train_without_teacher_b_and_name_its_command(tmp_path,
                                                                         monkeypatch):
    import fashion_mnist_sections as sec
    from kdzoo.zoo import registry
    assert sec.missing_teachers(["3.3", "3.6a"]) == []  # shipped: the card is in the tree
    real = registry.cards
    monkeypatch.setattr(registry, "cards",
                        lambda: {k: v for k, v in real().items() if k != TEACHER_B})
    (line,) = sec.missing_teachers(["3.3", "3.6a"])
    assert line.startswith(f"{TEACHER_B}: python recipes/"
                           "fashion_mnist_teacher.py") and "--seed 1" in line
    assert sec.missing_teachers(["3.5"]) == []
    recipe = os.path.join(RECIPES, "fashion_mnist.py")
    out = subprocess.run([sys.executable, "-c", WITHOUT_B % (TEACHER_B, RECIPES, recipe),
                          "--sections", "--section", "3.6a", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and f"--card {TEACHER_B}" in out.stderr, out.stderr[-2000:]
    assert not os.listdir(tmp_path)  # nothing trained


def test_the_teacher_recipe_refuses_a_card_of_another_architecture(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(RECIPES, "fashion_mnist_teacher.py"),
                          "--card", "fmnist_cnn_w16.x", "--dry_run", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "--card=fmnist_cnn_w16.x" in out.stderr
