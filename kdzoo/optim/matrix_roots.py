"""Inverse p-th roots of symmetric PSD statistics, by eigendecomposition in float32.

The reference (``matrix_inverse_pth_root``, line 375 of the optax-shampoo 0.0.6
copy of google-research ``scalable_shampoo/optax/distributed_shampoo.py``)
computes ``(S + eps I)^(-1/p)`` with the coupled Newton iteration (Higham,
*Functions of Matrices*, eq. 7.18; lines 497-530) in float64 where the hardware
has it, and keeps the previous preconditioner when the iteration's error is
>= ``inverse_failure_threshold`` = 0.1 or NaN (lines 1720-1727). kdzoo uses
``eigh`` in float32 instead: exact up to float32 rounding for the small blocks
(<= ``block_size``) Shampoo inverts, no iteration count to tune, and supported by
XLA on CPU, GPU and TPU. Like the reference, ``eps`` is relative by default:
``matrix_epsilon * max(lambda_max, 1e-6)`` (``relative_matrix_epsilon=True``,
line 492; the reference finds lambda_max by power iteration, eigh gives it).
Negative eigenvalues from rounding are clamped to 0 before ``eps`` is added.
"""

from keras import ops


def inverse_pth_root(matrix, p, ridge_epsilon=1e-6, relative_epsilon=True):
    """``(matrix + eps I)^(-1/p)`` for a symmetric PSD ``[d, d]`` matrix, float32.

    Args:
        matrix: symmetric positive semi-definite matrix.
        p: the root (Shampoo: ``2 * rank`` of the block, or ``exponent_override``).
        ridge_epsilon: ``eps``, or its factor on the largest eigenvalue.
        relative_epsilon: scale ``ridge_epsilon`` by ``max(lambda_max, 1e-6)``.
    Returns:
        ``(root, ok)``: the root and a bool scalar, False where it is not finite
        (the caller then keeps its previous preconditioner, as the reference does).
    """
    matrix = ops.cast(matrix, "float32")
    matrix = 0.5 * (matrix + ops.transpose(matrix))  # eigh reads one triangle
    eigenvalues, eigenvectors = ops.eigh(matrix)
    eigenvalues = ops.maximum(eigenvalues, 0.0)
    eps = float(ridge_epsilon)
    if relative_epsilon:
        eps = eps * ops.maximum(ops.max(eigenvalues), 1e-6)
    scale = ops.power(eigenvalues + eps, -1.0 / float(p))
    root = ops.matmul(eigenvectors * scale[None, :], ops.transpose(eigenvectors))
    ok = ops.all(ops.isfinite(root))
    return root, ok
