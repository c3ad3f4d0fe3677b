"""FunMatch on ImageNet (Beyer et al. 2022): BiT-M-R152x2 teacher (224 or 384 px) -> R50x1.

    python recipes/imagenet.py --workdir /tmp/imagenet                      # 224 px teacher
    python recipes/imagenet.py --preset teacher384 --workdir /tmp/in384     # 384 px teacher
ImageNet needs a manual download: see `kdzoo.data.get_spec("imagenet2012").manual_download`.
"""

from absl import app, flags

import common
from kdzoo.recipe import FunMatchRecipe

PRESETS = {
    "default": dict(epochs=1200, lr=3e-2, weight_decay=3e-4, temperature=1, batch_size=4096,
                    warmup_steps=5000, image_size=224),
    "teacher384": dict(epochs=1200, lr=3e-2, weight_decay=3e-4, temperature=1, batch_size=4096,
                       warmup_steps=5000, image_size=224, teacher_image_size=384,
                       teacher="bit_r152x2.funmatch_teacher_in1k_384"),
}

RECIPE = FunMatchRecipe("imagenet2012", "bit_r152x2.funmatch_teacher_in1k_224", PRESETS,
                        "default")
common.define_common_flags("/tmp/kdzoo/imagenet", PRESETS, "default")
common.define_funmatch_flags()
flags.adopt_module_key_flags(common)  # --help lists the common flags too

if __name__ == "__main__":
    app.run(common.funmatch_app(RECIPE))
