"""How Shampoo cuts a parameter into blocks (static shapes, decided once in ``build``).

Same layout as the reference (google-research ``scalable_shampoo/optax/
distributed_shampoo.py``; line numbers below are those of the file as packaged
in PyPI ``optax-shampoo`` 0.0.6):

1. ``merge_small_dims(shape, max_dim)`` (line 587): neighbouring dimensions are
   multiplied together while the product stays <= ``max_dim`` (default 4096,
   ``merge_small_dims_block_size``), so a conv kernel ``[3, 3, 64, 128]`` is
   preconditioned as ``[576, 128]`` and ``[3, 3, 512, 512]`` as
   ``[9, 512, 512]``; all-ones shapes become ``[1]``.
2. ``BlockPartitioner`` (line 681): every dimension larger than ``block_size``
   is split into ``block_size`` pieces plus a remainder, and the blocks are the
   Cartesian product of the pieces (first dimension outermost).

Each block of rank ``r`` gets ``r`` statistics, one ``[d, d]`` matrix per axis.
"""

import itertools

from keras import ops


def merge_small_dims(shape, max_dim):
    """Merge neighbouring dims while their product is <= ``max_dim`` (reference rule)."""
    shape = [int(d) for d in shape]
    if shape and all(d == 1 for d in shape):
        return [1]
    out, product = [], 1
    for d in shape:
        if product * d <= max_dim:
            product *= d
        else:
            if product > 1:
                out.append(product)
            product = d
    if product > 1:
        out.append(product)
    return out


def split_sizes(dim, block_size):
    """Piece sizes of one dimension: ``block_size`` pieces and the remainder."""
    if 0 < block_size < dim:
        n_full, rest = divmod(dim, block_size)
        return [block_size] * n_full + ([rest] if rest else [])
    return [dim]


class BlockLayout:
    """The blocks of one parameter: ``partition`` a tensor, ``merge`` blocks back.

    Args:
        shape: the parameter's shape.
        block_size: largest side of a block (0 or less: no splitting).
        merge_dims: merge small dims first (``best_effort_shape_interpretation``).
        merge_small_dims_block_size: the product bound of :func:`merge_small_dims`.
    """

    def __init__(self, shape, block_size, merge_dims=True, merge_small_dims_block_size=4096):
        self.shape = tuple(int(d) for d in shape)
        self.merged_shape = tuple(merge_small_dims(self.shape, merge_small_dims_block_size)
                                  if merge_dims else self.shape)
        self.sizes = [split_sizes(d, int(block_size)) for d in self.merged_shape]
        self.block_shapes = [tuple(t) for t in itertools.product(*self.sizes)]

    @property
    def rank(self):
        return len(self.merged_shape)

    def statistic_sizes(self):
        """The side of every statistic, block by block, axis by axis."""
        return [d for shape in self.block_shapes for d in shape]

    def partition(self, tensor):
        """Blocks of ``tensor`` (the parameter's shape), in ``block_shapes`` order."""
        blocks = [ops.reshape(tensor, self.merged_shape)]
        for axis, sizes in enumerate(self.sizes):
            if len(sizes) == 1:
                continue
            cuts = list(itertools.accumulate(sizes))[:-1]
            blocks = [piece for b in blocks for piece in ops.split(b, cuts, axis=axis)]
        return blocks

    def merge(self, blocks):
        """Inverse of :meth:`partition`: the blocks back as one tensor of ``shape``."""
        blocks = list(blocks)
        for axis in reversed(range(self.rank)):
            n = len(self.sizes[axis])
            if n == 1:
                continue
            blocks = [ops.concatenate(blocks[i:i + n], axis=axis)
                      for i in range(0, len(blocks), n)]
        assert len(blocks) == 1, len(blocks)
        return ops.reshape(blocks[0], self.shape)
