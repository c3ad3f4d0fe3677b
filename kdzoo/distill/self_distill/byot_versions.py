"""The two published forms of BYOT, as one switch: ``version="iccv2019"`` / ``"journal"``.

A version sets, together, the exit heads, the hint, the augmentation and the
schedule. Line numbers are of ArchipLab-LinfengZhang/pytorch-self-distillation-final
(commit 47ca93b), whose README says it holds the *journal* version's code.

* ``"journal"``: that code as it runs by default. Heads: ``SepConv`` stacks behind
  attention gates (``resnet.py`` 178-245, 300-322). Hint: a learned Linear adapter
  and ``torch.dist`` (``train.py`` 135-142, 161-163), on exits 1 and 2 of 4.
  Augmentation: pad-4 crop with grey 128, flip, AutoAugment's CIFAR-10 policy,
  Cutout 16 (``train.py`` 21, 34-38). Schedule: 250 epochs (17), batch 128 (23),
  SGD lr 0.1, momentum 0.9, weight decay 5e-4 (24, 109), lr / 10 at epochs E//3,
  2E//3, E-10 (117-119).
* ``"iccv2019"``: the conference paper as far as the published code shows it, with
  no code of its own. Heads: the bottleneck of the paper's Fig. 2, which is
  ``ScalaNet`` (``resnet.py`` 100-112, defined there but unused). Hint: ``|f1 - f2|^2``
  without adapter, named as the conference version's in the comment at ``train.py``
  133-134 (:mod:`kdzoo.distill.self_distill.losses`, ``hint="conference"``), on
  every shallow exit. Augmentation: the code's ``--autoaugment False`` branch, pad-4
  crop with grey 128 and flip (``train.py`` 39-43). Schedule: the same as
  ``"journal"``: kdzoo's assumption; no published code holds the conference run's
  schedule, and the conference numbers are not shown to come from this code.
"""

VERSIONS = ("iccv2019", "journal")

_MODEL = {
    "journal": {"head": "official", "hint": "official"},
    "iccv2019": {"head": "bottleneck", "hint": "conference"},
}

_SCHEDULE = {"epochs": 250, "batch_size": 128, "learning_rate": 0.1, "momentum": 0.9,
             "weight_decay": 5e-4, "milestones": "E // 3, 2 * E // 3, E - 10"}

_DATA = {
    "journal": {"crop": "pad", "pad_fill": 128, "flip": True, "autoaugment": "cifar10",
                "cutout": 16},
    "iccv2019": {"crop": "pad", "pad_fill": 128, "flip": True, "autoaugment": None,
                 "cutout": None},
}

SOURCES = {
    "journal": {
        "head": "resnet.py 178-245 (scala1-3, attention1-3), 300-322 (forward)",
        "hint": "train.py 135-142 (adaptation_layers), 161-163 (torch.dist, index != 1)",
        "data": "train.py 21 (--autoaugment True), 34-38",
        "schedule": "train.py 17 (250 epochs), 23 (batch 128), 24 + 109 (SGD), 117-119",
    },
    "iccv2019": {
        "head": "resnet.py 100-112 (ScalaNet; the paper's Fig. 2 bottleneck)",
        "hint": "train.py 133-134 (comment: the conference version's |f1-f2|^2)",
        "data": "train.py 39-43 (the --autoaugment False branch); kdzoo's assumption",
        "schedule": "train.py 17, 23, 24, 109, 117-119; kdzoo's assumption, no "
                    "conference code is published",
    },
}


def _check(version):
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS} (or None: choose head and hint "
                         f"yourself), got {version!r}.")


def model_settings(version):
    """``{"head", "hint"}`` of ``version`` (``SelfDistillation`` arguments)."""
    _check(version)
    return dict(_MODEL[version])


def run_settings(version):
    """``kdzoo.train.SupervisedRun`` fields of ``version``: data and schedule.

    ``epochs`` and ``batch_size`` go to the run; the optimiser is
    ``TorchSGD(learning_rate, momentum, weight_decay)`` over
    ``official_schedule(steps_per_epoch, epochs, learning_rate)`` (the milestones).
    """
    _check(version)
    return {**_DATA[version], **_SCHEDULE}


def resolve(version, head, hint, defaults):
    """``(head, hint)``: the version's, unless an explicit value contradicts it (error).

    ``defaults``: the constructor's defaults; a value equal to its default counts as
    not given.
    """
    if version is None:
        return head, hint
    chosen = model_settings(version)
    for key, value in (("head", head), ("hint", hint)):
        if value != defaults[key] and value != chosen[key]:
            raise ValueError(
                f"{key}={value!r} contradicts version={version!r}, which sets "
                f"{key}={chosen[key]!r}; pass one or the other.")
    return chosen["head"], chosen["hint"]
