"""The golden model of one layer with BF16 activations in and BF16 outputs: what the board's
``GEMV_BF16`` command returns, bit for bit (``bcq.sw.host.driver.Accelerator.gemv_bf16``).

It chains the existing definitions, nothing else:

1. the activation vector's BF16 patterns are encoded by the on-chip encoder's specification,
   :func:`bcq.sw.formats.encoder_int.encode_bits`, with the tensor scale ``2**ts_exp``
   (docs/arithmetic.md section 7);
2. each row's exact accumulator is :func:`bcq.sw.formats.golden.dot_fixed` (section 2);
3. each accumulator, whose LSB weighs ``2**(out_exp + ts_exp + w_exp)`` (``out_exp`` of
   :class:`bcq.sw.formats.golden.Arithmetic`, ``2**w_exp`` the weight's tensor scale, which must
   be a power of two), is rounded once to BF16 by
   :func:`bcq.sw.formats.output_float.float_bits` (section 8).
"""

import math

import torch

from .encoder_int import TS_EXP_RANGE, encode_bits, float_bits, tensor_scale_exp
from .errors import BCQError
from .golden import Arithmetic, dot_fixed
from .lobcq import BCQTensor
from .output_float import float_bits_tensor

__all__ = ["pow2_exponent", "output_exponent", "gemv_bf16_bits", "gemv_bf16", "bf16_from_bits"]


def pow2_exponent(scale, what="tensor scale"):
    """``e`` with ``scale == 2**e`` and ``e`` in :data:`TS_EXP_RANGE` (a signed byte); otherwise
    :class:`BCQError` naming ``what``."""
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0:
        mant, exp = math.frexp(scale)
        if mant == 0.5 and TS_EXP_RANGE[0] <= exp - 1 <= TS_EXP_RANGE[1]:
            return exp - 1
    raise BCQError(f"{what} {scale!r} is not a power of two 2**e with e in {TS_EXP_RANGE[0]}..{TS_EXP_RANGE[1]}: "
                   "the board's BF16 output adds the scale's exponent and has no multiplier (write the image "
                   "with pow2_tensor_scale=True, bcq weights --pow2-tensor-scale)")


def output_exponent(w: BCQTensor, ts_exp):
    """The weight of the accumulator's LSB for activations of tensor scale ``2**ts_exp``:
    ``out_exp + ts_exp + w_exp``."""
    return Arithmetic(w.config).out_exp + ts_exp + pow2_exponent(w.tensor_scale, "the weight's tensor scale")


def gemv_bf16_bits(w: BCQTensor, bits, *, ts_exp):
    """BF16 patterns (int64 [rows], 0..65535) of ``w @ x`` for the BF16 patterns ``bits`` [cols]
    of ``x`` encoded with the tensor scale ``2**ts_exp``."""
    if not isinstance(w, BCQTensor) or len(w.shape) != 2:
        raise BCQError("gemv_bf16: w must be a 2-D BCQTensor (a layer's weights)")
    e = output_exponent(w, ts_exp)
    xq = encode_bits(bits, w.codebooks, fmt="bf16", ts_exp=ts_exp)
    return float_bits_tensor(dot_fixed(w, xq), e, "bf16")


def bf16_from_bits(bits):
    """A ``torch.bfloat16`` tensor of the patterns ``bits`` (integers 0..65535)."""
    bits = torch.as_tensor(bits, dtype=torch.int64)
    return torch.where(bits >= 1 << 15, bits - (1 << 16), bits).to(torch.int16).view(torch.bfloat16)


def gemv_bf16(w: BCQTensor, x, *, ts_exp=None):
    """``w @ x`` as the board returns it (``torch.bfloat16`` [rows]) for a float vector ``x``
    (rounded to BF16 first, as the host sends it); ``ts_exp`` defaults to
    :func:`bcq.sw.formats.encoder_int.tensor_scale_exp` of ``x``. Returns ``(y, ts_exp)``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 1:
        raise BCQError("gemv_bf16: x must be a 1-D floating-point torch.Tensor")
    bits = float_bits(x, "bf16")
    if ts_exp is None:
        ts_exp = tensor_scale_exp(bits, w.config)
    return bf16_from_bits(gemv_bf16_bits(w, bits, ts_exp=ts_exp)), ts_exp
