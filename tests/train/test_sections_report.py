"""Issue 24, the sections' report: tiny finished runs of the real 3.3 plan are measured into
rows that match top-1 / agreement computed here independently, unfinished runs are listed,
other sections' rows survive, the file is replaced whole, and a plot is written."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))


def _tiny(run):
    """The real run, shrunk: 20 images (2 per class), batch 8, 2 steps, no final eval."""
    extra = {"warmup_steps": 1} if hasattr(run, "warmup_steps") else {}
    return dataclasses.replace(run, epochs=1, train_per_class=2, batch_size=8,
                               log_every_steps=1, checkpoint_every_steps=2, eval_roles=(),
                               checkpoint_every_minutes=None, **extra)


def _view(images, size):
    """The test images at ``size`` px, by hand: area resize of the square, nothing to crop."""
    import tensorflow as tf
    if size == 28:
        return images
    return tf.image.resize(images, (size, size), method="area").numpy()


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    import fashion_mnist as fm
    import fashion_mnist_report as report
    import fashion_mnist_sections as sec
    import fashion_mnist_sections_report as sreport
    from kdzoo.train import study
    tmp = tmp_path_factory.mktemp("sections")
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    s = fm.settings()
    entries = [(k, _tiny(r)) for k, r in sec.plan_sections(s, ["3.3"], str(tmp), fm.method_run)
               if k["seed"] in (0, 1)]
    trained = [(k, r) for k, r in entries if k["seed"] == 0 or k["arm"] == "labels20"]
    report.train_all(trained)
    evidence = tmp / "results" / "sections.json"
    os.makedirs(evidence.parent)
    old_rows = [dict(section="3.4", arm="adam", seed=0, epochs=30, top1=1.0, agreement=2.0),
                dict(section="3.3", arm="stale", seed=9, epochs=300, top1=0.0, agreement=0.0)]
    evidence.write_text(json.dumps({"sections": {"3.4": {"complete": True, "title": "x"},
                                                 "3.3": {"complete": True}},
                                    "rows": old_rows}))
    merged, files = sreport.report_sections(s, entries, {"3.3": sec.SECTIONS["3.3"]}, sec.ALL,
                                            str(evidence))
    return dict(merged=merged, files=files, entries=entries, trained=trained, tmp=tmp, s=s,
                evidence=evidence, finished=[k for k, r in entries if study.is_finished(r)])


def test_rows_match_top1_and_agreement_computed_independently(reported):
    import keras

    import kdzoo
    from kdzoo.data import fashion_mnist
    images, labels = fashion_mnist.load("test")
    images = images.astype("float32")
    teacher = kdzoo.load(reported["s"]["teacher"])
    teacher_top1 = np.argmax(teacher.predict(images, verbose=0), -1)
    rows = [r for r in reported["merged"]["rows"] if r["section"] == "3.3"]
    assert len(rows) == len(reported["trained"]) == 4
    for key, run in reported["trained"]:
        row = next(r for r in rows if (r["arm"], r["seed"]) == (key["arm"], key["seed"]))
        model = keras.saving.load_model(os.path.join(run.workdir, "model.keras"))
        pred = np.argmax(model.predict(_view(images, 20), verbose=0), -1)
        assert row["top1"] == pytest.approx(100 * np.mean(pred == labels), abs=0.011)
        assert row["agreement"] == pytest.approx(100 * np.mean(pred == teacher_top1), abs=0.011)
        assert (row["epochs"], row["train_images"], row["total_steps"]) == (300, 20, 2)
        assert row["precision"] == "float32" and row["wall_s_per_step"] > 0
        assert row["student_flops"] == row["student_flops"] // 1 > 0
    assert reported["merged"]["teacher"]["top1"] == pytest.approx(
        100 * np.mean(teacher_top1 == labels), abs=0.011)


def test_student_flops_are_those_of_the_20px_student(reported):
    import kdzoo
    from kdzoo.distill.self_distill.early_exit import count_flops
    rows = [r for r in reported["merged"]["rows"] if r["section"] == "3.3"]
    at20 = count_flops(kdzoo.load("fmnist_cnn_w16", weights=None, input_shape=(20, 20, 1)))
    at28 = count_flops(kdzoo.load("fmnist_cnn_w16", weights=None))
    assert at20 < at28 and {r["student_flops"] for r in rows} == {at20}


def test_unfinished_runs_are_listed_and_the_file_is_incomplete(reported):
    rec = reported["merged"]["sections"]["3.3"]
    assert sorted((m["arm"], m["seed"]) for m in rec["incomplete"]) == [
        ("funmatch_teacher20", 1), ("funmatch_teacher28", 1)]
    assert (rec["planned_runs"], rec["finished_runs"], rec["complete"]) == (6, 4, False)
    assert reported["merged"]["complete"] is False
    assert "3.8" in reported["merged"]["unreported_sections"]
    assert rec["commit"] and rec["command"].startswith("python recipes/fashion_mnist.py")
    assert rec["machine"]["cores"] == os.cpu_count()


def test_summary_is_mean_and_population_std_over_seeds(reported):
    rows = [r for r in reported["merged"]["rows"]
            if r["section"] == "3.3" and r["arm"] == "labels20"]
    group = next(g for g in reported["merged"]["sections"]["3.3"]["summary"]
                 if g["arm"] == "labels20")
    top1 = [r["top1"] for r in rows]
    assert group["n"] == 2 and group["top1_mean"] == pytest.approx((top1[0] + top1[1]) / 2)
    assert group["top1_std"] == pytest.approx(abs(top1[0] - top1[1]) / 2)


def test_other_sections_rows_are_kept_and_stale_rows_of_this_one_replaced(reported):
    on_disk = json.loads(reported["evidence"].read_text())
    assert on_disk == json.loads(json.dumps(reported["merged"]))
    assert [r for r in on_disk["rows"] if r["section"] == "3.4"] == [
        dict(section="3.4", arm="adam", seed=0, epochs=30, top1=1.0, agreement=2.0)]
    assert not [r for r in on_disk["rows"] if r["arm"] == "stale"]
    assert on_disk["sections"]["3.4"] == {"complete": True, "title": "x"}
    assert not [f for f in os.listdir(reported["evidence"].parent) if f.startswith(".tmp")]


def test_a_plot_per_section_next_to_the_evidence(reported):
    (path,) = reported["files"]
    assert os.path.basename(path) == "fashion_mnist_section_3.3.png"
    assert os.path.dirname(path) == str(reported["evidence"].parent)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_second_report_changes_no_run_and_prints_the_table(reported, capsys):
    import fashion_mnist_sections_report as sreport
    before = {k["arm"] + str(k["seed"]): os.listdir(r.workdir) for k, r in reported["entries"]
              if os.path.isdir(r.workdir)}
    sreport.report_and_print(reported["s"], reported["entries"], ["3.3"],
                             str(reported["evidence"]))
    after = {k["arm"] + str(k["seed"]): os.listdir(r.workdir) for k, r in reported["entries"]
             if os.path.isdir(r.workdir)}
    assert before == after
    out = capsys.readouterr().out
    assert "section 3.3 (cross-resolution): 4/6 runs, INCOMPLETE" in out
    assert "| labels20 | 300 | 2 |" in out


def test_the_recorded_commit_is_dirty_for_code_edits_not_for_the_evidence(tmp_path):
    import subprocess

    import fashion_mnist_sections_report as report
    git = lambda *a: subprocess.run(("git", "-C", str(tmp_path)) + a, check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "recipes" / "r.py").write_text("x = 1\n")
    (tmp_path / "docs" / "results" / "e.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head, here = git("rev-parse", "HEAD"), str(tmp_path / "recipes")
    assert report._commit(here) == head
    (tmp_path / "docs" / "results" / "e.json").write_text('{"rows": []}\n')  # a run's report
    assert report._commit(here) == head
    (tmp_path / "recipes" / "r.py").write_text("x = 2\n")
    assert report._commit(here) == head + "+dirty"
