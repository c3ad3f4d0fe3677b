"""FunMatch (Beyer et al. 2022): the distiller, its views and variants, its
targets (online, fixed, teacher cache), the lockstep grid."""

from kdzoo.distill.funmatch.distiller import FunMatchDistiller, VARIANTS

__all__ = ["FunMatchDistiller", "VARIANTS"]
