"""FunMatch on ImageNet (Beyer et al. 2022): BiT-M-R152x2 teacher (224 or 384 px) -> R50x1.

    python recipes/imagenet.py --workdir /tmp/imagenet                      # 224 px teacher
    python recipes/imagenet.py --preset teacher384 --workdir /tmp/in384     # 384 px teacher
    python recipes/imagenet.py --preset published --workdir /tmp/in9600     # the zoo's student
ImageNet needs a manual download: see `kdzoo.data.get_spec("imagenet2012").manual_download`.

Settings are big_vision's ``configs/proj/distill/bit_i1k.py`` (commit 0127fb6):
batch 4096 (line 44), T=1 (line 80), lr 0.03, wd 3e-4, 5000 warm-up steps
(lines 87-89). Its ``total_epochs = 1200`` (line 48) is "a good middle-ground";
``default`` follows it. The published student (``bit_r50x1.funmatch_in1k_224``,
82.8 % top-1, the paper's Table 1 first row and Figure 1, which that config's
README says it reproduces) was distilled for 9,600 epochs: ``published`` is the
same config at ``total_epochs=9600`` (2.9M steps; months on one accelerator).
"""

from absl import app, flags

import common
from kdzoo.train.recipe import FunMatchRecipe

_BIT_I1K = dict(lr=3e-2, weight_decay=3e-4, temperature=1, batch_size=4096,
                warmup_steps=5000, image_size=224)
PRESETS = {
    "default": dict(epochs=1200, **_BIT_I1K),
    "teacher384": dict(epochs=1200, teacher_image_size=384,
                       teacher="bit_r152x2.funmatch_teacher_in1k_384", **_BIT_I1K),
    "published": dict(epochs=9600, **_BIT_I1K),
}

RECIPE = FunMatchRecipe("imagenet2012", "bit_r152x2.funmatch_teacher_in1k_224", PRESETS,
                        "default")
common.define_common_flags("/tmp/kdzoo/imagenet", PRESETS, "default")
common.define_funmatch_flags()
flags.adopt_module_key_flags(common)  # --help lists the common flags too

if __name__ == "__main__":
    app.run(common.funmatch_app(RECIPE))
