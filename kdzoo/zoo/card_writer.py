"""Ship a trained model in the zoo: clean weights file + model card, accuracy measured.

Why measured here: a card's ``top1`` must be what a user gets from
``kdzoo.load(name)``, so the card is written, the model is loaded back through
the zoo from the exported file, evaluated by the caller's ``evaluate``, and the
card rewritten with that figure. The weights hold no optimizer state (a fresh
zoo architecture receives the trained weights). Files are written atomically.
"""

import hashlib
import os

from kdzoo.atomic import save_weights, write_json

__all__ = ["export_card"]


def export_card(model, name, *, dataset, stage, produced_by, evaluate, cards_dir=None,
                preprocessing=None, extra=None):
    """Write ``<name>.weights.h5`` + ``<name>.json`` for ``model``; returns the card.

    ``name`` is ``<architecture>.<tag>``; ``evaluate(zoo_model) -> top-1 in %``
    measures the model loaded back by ``kdzoo.load(name)``; ``extra`` adds card
    fields (seed, recipe settings, source run).
    """
    import kdzoo
    from kdzoo.zoo import registry
    arch = name.split(".")[0]
    info = kdzoo.model_info(arch)
    cards_dir = cards_dir or registry.CARDS_DIR
    clean = kdzoo.load(arch, weights=None)
    clean.set_weights(model.get_weights())
    path = os.path.join(cards_dir, f"{name}.weights.h5")
    save_weights(clean, path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    card = {"name": name, "aliases": [], "architecture": arch, "dataset": dataset,
            "num_classes": info["num_classes"], "input_size": info["input_size"],
            "preprocessing": preprocessing or "raw pixels in [0, 255] (the model rescales itself)",
            "url": None, "format": "keras_weights", "file": os.path.basename(path),
            "sha256": digest, "size_bytes": os.path.getsize(path), "top1": None,
            "top1_source": f"measured by kdzoo on the {dataset} test split",
            "produced_by": produced_by, "stage": stage,
            "license": "Apache-2.0 (kdzoo); data: see the dataset's license", **(extra or {})}
    card_path = os.path.join(cards_dir, f"{name}.json")
    write_json(card_path, card)
    registry.cards.cache_clear()
    card["top1"] = round(float(evaluate(kdzoo.load(name))), 2)
    write_json(card_path, card)
    registry.cards.cache_clear()
    return card
