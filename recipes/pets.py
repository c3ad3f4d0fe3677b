"""FunMatch on Oxford-IIIT Pets (Beyer et al. 2022): the paper's R152x2 teacher -> BiT-R50x1.

    python recipes/pets.py --workdir /tmp/pets --preset fast
    python recipes/pets.py --grid --grid_index 17      # one point of the paper's grid
    python recipes/pets.py --smoke --workdir /tmp/smoke
"""

from absl import app, flags

import common
from kdzoo.train.recipe import FunMatchRecipe

# The authors' settings: batch 512, 128 px, warm-up 1500, Adam + clip 1.0.
PRESETS = {
    "fast": dict(epochs=1_000, lr=1e-2, weight_decay=1e-3, temperature=5),
    "medium": dict(epochs=3_000, lr=3e-3, weight_decay=3e-4, temperature=10),
    "long": dict(epochs=30_000, lr=3e-3, weight_decay=1e-5, temperature=2),
}

RECIPE = FunMatchRecipe("pets", "bit_r152x2.funmatch_teacher_pets_128", PRESETS)
common.define_common_flags("/tmp/kdzoo/pets", PRESETS, "fast")
common.define_funmatch_flags()
flags.adopt_module_key_flags(common)  # --help lists the common flags too

if __name__ == "__main__":
    app.run(common.funmatch_app(RECIPE))
