"""The error for an exit name that is not a layer of the SelfDistillation backbone.

Exits are read from the backbone's own (top-level) layers. A model nested inside
it, such as the backbone of a keras-hub ``ImageClassifier``, is one layer there:
its inner layers' outputs are not tensors of the outer graph. The message says
where a name was found instead, and lists the names that would work: the last
layer at each feature-map size (the natural ends of the sections).
"""

import difflib

import keras


def section_ends(model):
    """Top-level 4-D layers that are the last at their spatial size (padding skipped)."""
    ends, last_hw = [], None
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # several outputs / nodes: not an exit
            continue
        if len(shape) != 4:
            continue
        hw = shape[1:3]
        if ends and hw == last_hw:
            ends[-1] = layer.name
        elif not ends or None in hw + last_hw or hw[0] * hw[1] < last_hw[0] * last_hw[1]:
            ends.append(layer.name)
            last_hw = hw
        # else: a larger map (a padding layer before a strided op): not a section end
    return ends


def _nested_owner(model, name):
    for layer in model.layers:
        if isinstance(layer, keras.Model) and name in [s.name for s in layer.layers]:
            return layer
    return None


def missing_exit_message(backbone, name):
    """Why ``name`` is no exit of ``backbone``, and which names are."""
    layer_names = [layer.name for layer in backbone.layers]
    text = f"Exit layer {name!r} is not in backbone {backbone.name!r}."
    owner = _nested_owner(backbone, name)
    if owner is not None:
        text += (f" It is inside the nested model {owner.name!r}, whose layers are not part "
                 "of the backbone's graph; exits must be top-level layers. For a keras-hub "
                 "model use kdzoo.from_keras_hub(model), which flattens it (and adds its "
                 "preprocessing).")
    close = difflib.get_close_matches(name, layer_names, n=3, cutoff=0.4)
    if close:
        text += f" Did you mean {', '.join(repr(c) for c in close)}?"
    ends = section_ends(backbone)
    if ends:
        text += f" Candidates (the last layer at each feature-map size): {ends}."
    return text
