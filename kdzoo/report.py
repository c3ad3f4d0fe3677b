"""Tables and plots for finished runs (the Fashion-MNIST demo and its longer version).

Returns strings and writes files; printing is the caller's business.
"""

import json
import os

import numpy as np

from kdzoo.atomic import atomic_path, write_json

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
STUDENTS = ("funmatch", "fix_rs", "labels")
MULTI_EXIT = ("self_distillation", "deep_supervision")
MODEL_FILES = {"teacher": "model.keras", "funmatch": "student.keras", "fix_rs": "student.keras",
               "labels": "model.keras", "self_distillation": "model.keras",
               "deep_supervision": "model.keras"}


def _load(workdir, name):
    import keras

    import kdzoo  # noqa: F401  (registers kdzoo's classes)
    import kdzoo.distill.self_distill  # noqa: F401
    return keras.saving.load_model(os.path.join(workdir, name, MODEL_FILES[name]))


def _predict(model, images):
    out = model.predict(images, batch_size=512, verbose=0)
    return out


def fashion_mnist_summary(workdir, data_dir=None):
    """Measure every finished stage of the demo on the 10,000 test images."""
    from kdzoo.data import fashion_mnist
    from kdzoo.distill.early_exit import EarlyExit, count_flops, exit_flops

    images, labels = fashion_mnist.load("test", data_dir)
    images = images.astype("float32")
    teacher = _load(workdir, "teacher")
    teacher_pred = _predict(teacher, images).argmax(-1)
    rows = [{"model": "teacher", "params": teacher.count_params(),
             "flops": count_flops(teacher),
             "top1": float(np.mean(teacher_pred == labels)), "agreement": 1.0}]
    for name in STUDENTS:
        model = _load(workdir, name)
        pred = _predict(model, images).argmax(-1)
        rows.append({"model": name, "params": model.count_params(), "flops": count_flops(model),
                     "top1": float(np.mean(pred == labels)),
                     "agreement": float(np.mean(pred == teacher_pred))})
    exits = {}
    for name in MULTI_EXIT:
        model = _load(workdir, name)
        logits = model.predict(images, batch_size=512, verbose=0)
        per_exit = [float(np.mean(np.argmax(z, -1) == labels)) for z in logits]
        ensemble = float(np.mean(np.mean(np.stack(logits), 0).argmax(-1) == labels))
        deepest = np.argmax(logits[-1], -1)
        flops = exit_flops(model)
        rows.append({"model": name, "params": model.backbone.count_params(),
                     "flops": flops["full"], "top1": per_exit[-1],
                     "agreement": float(np.mean(deepest == teacher_pred)),
                     "exits": per_exit, "ensemble": ensemble})
        early = []
        for t in THRESHOLDS:
            result = EarlyExit(model, [t] * (model.num_exits - 1)).evaluate(images, labels)
            early.append({"threshold": t, "accuracy": result["accuracy"],
                          "avg_flops": result["avg_flops"],
                          "flops_fraction": result["flops_fraction"],
                          "images_per_s": result["images_per_s"],
                          "exit_fractions": result["exit_fractions"]})
        exits[name] = {"exit_accuracy": per_exit, "exit_flops": flops["to_exit"],
                       "full_flops": flops["full"], "ensemble": ensemble, "early_exit": early}
    summary = {"rows": rows, "exits": exits, "workdir": os.path.abspath(workdir)}
    write_json(os.path.join(workdir, "metrics.json"), summary)
    return summary


def summary_of(workdir, data_dir=None):
    """The demo's summary: ``metrics.json`` if it is newer than every stage's results
    (a finished demo rerun prints its table at once), else measured afresh."""
    path = os.path.join(workdir, "metrics.json")
    stages = [os.path.join(workdir, name, "metrics.json") for name in MODEL_FILES]
    if os.path.exists(path) and all(
            os.path.exists(s) and os.path.getmtime(s) <= os.path.getmtime(path) for s in stages):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return fashion_mnist_summary(workdir, data_dir)


def format_table(summary):
    lines = ["| model | params | MFLOPs | test top-1 (%) | agreement w/ teacher (%) | exits (%) | ensemble (%) |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        exits = " / ".join(f"{100 * a:.2f}" for a in r.get("exits", [])) or "—"
        ens = f"{100 * r['ensemble']:.2f}" if "ensemble" in r else "—"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['flops'] / 1e6:.2f} | "
                     f"{100 * r['top1']:.2f} | {100 * r['agreement']:.2f} | {exits} | {ens} |")
    for name, e in summary["exits"].items():
        lines.append(f"\nearly exit ({name}): threshold -> test top-1, share of full FLOPs, images/s")
        for p in e["early_exit"]:
            lines.append(f"  {p['threshold']:.2f} -> {100 * p['accuracy']:.2f}%, "
                         f"{100 * p['flops_fraction']:.1f}% FLOPs, {p['images_per_s']:.0f} img/s")
    return "\n".join(lines)


def _finish(fig, ax, path, title, xlabel, ylabel):
    """Label, save (atomically) and close one plot; returns its path."""
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_summary(summary, workdir):
    """accuracy_vs_flops.png and training_curves.png; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = iter(f"C{i}" for i in range(10))
    for r in summary["rows"]:
        if r["model"] not in summary["exits"]:
            ax.scatter(r["flops"] / 1e6, 100 * r["top1"], label=r["model"], s=40,
                       color=next(colors))
    for name, e in summary["exits"].items():
        color = next(colors)
        ax.plot(np.array(e["exit_flops"]) / 1e6, 100 * np.array(e["exit_accuracy"]), "o-",
                color=color, label=f"{name}: exits 1..{len(e['exit_flops'])}")
        ee = e["early_exit"]
        ax.plot([p["avg_flops"] / 1e6 for p in ee], [100 * p["accuracy"] for p in ee], "x--",
                color=color, alpha=0.6, label=f"{name}: early exit (thresholds)")
    paths.append(_finish(fig, ax, os.path.join(workdir, "accuracy_vs_flops.png"),
                         "Fashion-MNIST: accuracy vs compute", "MFLOPs per image",
                         "test top-1 (%)"))

    fig, ax = plt.subplots(figsize=(7, 5))
    for name in MODEL_FILES:
        history = os.path.join(workdir, name, "history.csv")
        if not os.path.exists(history):
            continue
        data = np.genfromtxt(history, delimiter=",", names=True)
        data = np.atleast_1d(data)
        if "loss" in data.dtype.names:
            ax.plot(data["epoch"] + 1, data["loss"], "o-", label=name)
    ax.set_yscale("log")
    paths.append(_finish(fig, ax, os.path.join(workdir, "training_curves.png"),
                         "Training curves", "epoch", "training loss"))
    return paths


def format_seed_table(summaries, seeds):
    """Mean and spread (min-max) over seeds of every model's test top-1 and exits."""
    lines = [f"over seeds {seeds}: test top-1 mean ± std (min-max), %"]
    names = [r["model"] for r in summaries[0]["rows"]]
    for i, name in enumerate(names):
        values = 100 * np.array([s["rows"][i]["top1"] for s in summaries])
        line = f"  {name:18s} {values.mean():.2f} ± {values.std():.2f} ({values.min():.2f}-{values.max():.2f})"
        if "ensemble" in summaries[0]["rows"][i]:
            ens = 100 * np.array([s["rows"][i]["ensemble"] for s in summaries])
            ex = 100 * np.array([s["rows"][i]["exits"] for s in summaries]).mean(0)
            line += f"  exits {' / '.join(f'{v:.2f}' for v in ex)}  ensemble {ens.mean():.2f} ± {ens.std():.2f}"
        lines.append(line)
    return "\n".join(lines)


def write_seed_summary(summaries, seeds, workdir):
    write_json(os.path.join(workdir, "seeds.json"), {"seeds": seeds, "summaries": summaries})


PRETRAINED = (  # (card name, stage, file inside the stage, take the backbone?)
    ("fmnist_cnn_w32.kdzoo_teacher", "teacher", "model.keras", False),
    ("fmnist_cnn_w16.kdzoo_funmatch", "funmatch", "student.keras", False),
    ("fmnist_cnn_w16.kdzoo_self_distill", "self_distillation", "model.keras", True),
)


def export_pretrained(workdir, command, cards_dir=None, data_dir=None):
    """Write our Fashion-MNIST models into kdzoo/pretrained as weights + model cards.

    Each card's ``top1`` is measured here, on the 10,000 test images, through
    ``kdzoo.load`` of the exported file: exactly what a user will get.
    """
    import hashlib

    import keras

    import kdzoo
    from kdzoo import registry
    from kdzoo.data import fashion_mnist
    from kdzoo.atomic import save_weights

    cards_dir = cards_dir or registry.CARDS_DIR
    images, labels = fashion_mnist.load("test", data_dir)
    written = []
    for name, stage, fname, backbone in PRETRAINED:
        trained = keras.saving.load_model(os.path.join(workdir, stage, fname))
        trained = trained.backbone if backbone else trained
        arch = name.split(".")[0]
        clean = kdzoo.load(arch, weights=None)  # no optimizer state in the shipped file
        clean.set_weights(trained.get_weights())
        path = os.path.join(cards_dir, f"{name}.weights.h5")
        save_weights(clean, path)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        card = {"name": name, "aliases": [], "architecture": arch, "dataset": "fashion_mnist",
                "num_classes": 10, "input_size": 28,
                "preprocessing": "raw pixels in [0, 255], 28x28x1 (the model rescales itself)",
                "url": None, "format": "keras_weights", "file": os.path.basename(path),
                "sha256": digest, "size_bytes": os.path.getsize(path), "top1": None,
                "top1_source": f"measured by kdzoo on the 10,000 Fashion-MNIST test images",
                "produced_by": command, "stage": stage,
                "license": "Apache-2.0 (kdzoo); data: Fashion-MNIST (MIT)"}
        card_path = os.path.join(cards_dir, f"{name}.json")
        write_json(card_path, card)
        registry.cards.cache_clear()
        model = kdzoo.load(name)
        pred = model.predict(images.astype("float32"), batch_size=512, verbose=0).argmax(-1)
        card["top1"] = round(100.0 * float(np.mean(pred == labels)), 2)
        write_json(card_path, card)
        written.append(card)
    registry.cards.cache_clear()
    return written
