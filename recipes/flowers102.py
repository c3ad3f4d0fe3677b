"""FunMatch on Oxford Flowers-102 (Beyer et al. 2022): the paper's R152x2 teacher -> BiT-R50x1.

    python recipes/flowers102.py --workdir /tmp/flowers102 --preset fast
    python recipes/flowers102.py --grid --grid_index 17      # one point of the paper's grid
    python recipes/flowers102.py --smoke --workdir /tmp/smoke
"""

from absl import app, flags

import common
from kdzoo.train.recipe import FunMatchRecipe

# The authors' settings: batch 512, 128 px, warm-up 1500, Adam + clip 1.0.
PRESETS = {
    "fast": dict(epochs=10_000, lr=3e-3, weight_decay=3e-4, temperature=10),
    "medium": dict(epochs=100_000, lr=1e-3, weight_decay=1e-4, temperature=1),
    "long": dict(epochs=1_000_000, lr=3e-4, weight_decay=1e-5, temperature=1),
}

RECIPE = FunMatchRecipe("flowers102", "bit_r152x2.funmatch_teacher_flowers102_128", PRESETS)
common.define_common_flags("/tmp/kdzoo/flowers102", PRESETS, "fast")
common.define_funmatch_flags()
flags.adopt_module_key_flags(common)  # --help lists the common flags too

if __name__ == "__main__":
    app.run(common.funmatch_app(RECIPE))
