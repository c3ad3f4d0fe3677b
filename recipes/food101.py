"""FunMatch on Food-101 (Beyer et al. 2022): the paper's R152x2 teacher -> BiT-R50x1.

    python recipes/food101.py --workdir /tmp/food101 --preset fast
    python recipes/food101.py --grid --grid_index 17      # one point of the paper's grid
    python recipes/food101.py --smoke --workdir /tmp/smoke
"""

from absl import app, flags

import common
from kdzoo.train.recipe import FunMatchRecipe

# The authors' settings: batch 512, 128 px, warm-up 1500, Adam + clip 1.0.
PRESETS = {
    "fast": dict(epochs=100, lr=1e-2, weight_decay=1e-3, temperature=10),
    "medium": dict(epochs=1_000, lr=1e-3, weight_decay=3e-4, temperature=10),
    "long": dict(epochs=3_000, lr=1e-2, weight_decay=1e-4, temperature=5),
}

RECIPE = FunMatchRecipe("food101", "bit_r152x2.funmatch_teacher_food101_128", PRESETS)
common.define_common_flags("/tmp/kdzoo/food101", PRESETS, "fast")
common.define_funmatch_flags()
flags.adopt_module_key_flags(common)  # --help lists the common flags too

if __name__ == "__main__":
    app.run(common.funmatch_app(RECIPE))
