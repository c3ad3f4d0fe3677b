"""The eight teaching variants of Beyer et al. 2022 (sec. 3) as one frozen table.

Why a table: a variant is a handful of facts (how the student's crop is made,
where the teacher's view comes from, what a fixed target is computed on,
whether the shared view is mixed up). :class:`kdzoo.distill.funmatch.views.ViewMaker`
reads a row and never tests a variant's name, so a ninth variant is one row
here plus its tests.

Fields:

* ``student_crop``: ``"rs"`` (whole image resized), ``"rc"`` (mild random
  crop), ``"ic"`` (inception crop).
* ``teacher``: ``"same"`` (the student's very view: box, flip, mixup),
  ``"independent"`` (its own box and flip of the same kind) or ``"fixed"`` (a
  target computed once per image, see ``target``).
* ``target``: for fixed teachers, the view the target is computed on: ``"rs"``,
  ``"cc"`` (central crop) or ``"ic_ens"`` (mean over inception crops).
* ``student_flip``: random horizontal flips of the student's view.
* ``mixup``: batch mixup of the (shared) view.
"""

import dataclasses
import difflib

__all__ = ["Variant", "VARIANT_TABLE", "VARIANTS", "FIXED_VARIANTS", "get_variant",
           "check_variant"]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    student_crop: str
    teacher: str
    target: str | None = None
    student_flip: bool = True
    mixup: bool = False

    @property
    def fixed(self):
        return self.teacher == "fixed"

    @property
    def shared(self):
        return self.teacher == "same"


VARIANT_TABLE = (
    Variant("fix/rs", "rs", "fixed", target="rs", student_flip=False),
    Variant("fix/cc", "rc", "fixed", target="cc"),
    Variant("fix/ic_ens", "ic", "fixed", target="ic_ens"),
    Variant("ind/rc", "rc", "independent"),
    Variant("ind/ic", "ic", "independent"),
    Variant("same/rc", "rc", "same"),
    Variant("same/ic", "ic", "same"),
    Variant("funmatch", "ic", "same", mixup=True),
)
_BY_NAME = {v.name: v for v in VARIANT_TABLE}
VARIANTS = tuple(_BY_NAME)
FIXED_VARIANTS = tuple(v.name for v in VARIANT_TABLE if v.fixed)


def check_variant(variant):
    """Return ``variant`` if known, else raise ValueError with a did-you-mean."""
    if variant in _BY_NAME:
        return variant
    close = difflib.get_close_matches(str(variant), VARIANTS, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown teaching variant {variant!r}.{hint} "
                     f"Choose one of {', '.join(VARIANTS)}.")


def get_variant(variant):
    """The :class:`Variant` row of ``variant`` (a name), with a clear error if unknown."""
    return _BY_NAME[check_variant(variant)]
