"""Did-you-mean suggestions for model names, ranked the way a user means them.

Why not ``difflib.get_close_matches`` alone: it ranks by character overlap, so
``"resnet50"`` came out nearest to ``cifar_resnet50`` (a 32 px CIFAR net) and
never reached ``resnet50_funmatch_imagenet``, the ImageNet checkpoint a user
typing "resnet50" wants. A user types the start of a name or one of its words,
so those rank first: names starting with the query, then names having it as a
whole word (split at ``_``, ``.``, ``-``) or the start of one, then difflib's
close matches in difflib's order. Within the first two ranks, the closer (difflib
ratio) and shorter name first.
"""

import difflib
import re

__all__ = ["suggest", "did_you_mean"]

_WORD_SPLIT = re.compile(r"[._-]")


def _rank(query, name):
    """0: ``name`` starts with ``query``; 1: a word of it is or starts with ``query``;
    2: neither (left to difflib)."""
    q, n = query.lower(), name.lower()
    if n.startswith(q):
        return 0
    words = [w for w in _WORD_SPLIT.split(n) if w]
    joined = [n[m.end():] for m in _WORD_SPLIT.finditer(n)]  # "resnet50_x" after "cifar_"
    if any(w == q or w.startswith(q) for w in words) or any(j.startswith(q) for j in joined):
        return 1
    return 2


def suggest(query, names, n=3, cutoff=0.5):
    """Up to ``n`` names of ``names`` that ``query`` most likely meant, best first."""
    names = sorted(set(names))
    query = str(query)
    if not query:
        return []
    ratio = {name: difflib.SequenceMatcher(None, query.lower(), name.lower()).ratio()
             for name in names}
    close = difflib.get_close_matches(query, names, n=max(n, 10), cutoff=cutoff)
    order = {name: i for i, name in enumerate(close)}  # difflib's own order for rank 2
    candidates = [name for name in names if _rank(query, name) < 2 or name in order]
    candidates.sort(key=lambda name: (_rank(query, name), order.get(name, 0), -ratio[name],
                                      len(name), name))
    return candidates[:n]


def did_you_mean(query, names, n=3, cutoff=0.5):
    """``" Did you mean 'a', 'b'?"`` for a message, or ``""`` when nothing is close."""
    close = suggest(query, names, n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
