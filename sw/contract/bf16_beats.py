"""Beats of 16-bit float activations (the on-chip encoder's input stream) and their packer.

One beat carries ``lanes`` 16-bit patterns (element 0 in the low bits) and ``last`` (the vector's
final beat). The encoder's input is narrower than its output when the engine needs few scalars
per cycle: ``lanes`` divides the output beat's ``B * Lb`` scalars (``bcq.hw.bcq_encoder``), so
``B * Lb / lanes`` input beats make one encoded activation beat
(:func:`bcq.sw.contract.beats.activation_beats`).
"""

import operator

from amaranth import unsigned
from amaranth.lib import data

from bcq.sw.formats.errors import ConfigError

from .packing import pack

__all__ = ["float16_layout", "float16_beats"]


def _lanes(lanes):
    try:
        n = operator.index(lanes)
    except TypeError:
        n = None
    if n is None or isinstance(lanes, bool) or n < 1:
        raise ConfigError("lanes", lanes, "a positive integer")
    return n


def float16_layout(lanes):
    """One input beat: ``data`` (``lanes`` 16-bit patterns) and ``last``."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(16), _lanes(lanes)), "last": unsigned(1)})


def float16_beats(bits, lanes):
    """Packed beats (ints) of one vector of 16-bit patterns (a sequence of ints 0..65535 whose
    length is a positive multiple of ``lanes``)."""
    bits = [int(b) for b in bits]
    s = _lanes(lanes)
    if not bits or len(bits) % s:
        raise ConfigError("vector length", len(bits), f"a positive multiple of lanes={s}")
    count = len(bits) // s
    layout = float16_layout(s)
    return [pack(layout, {"data": bits[k * s:(k + 1) * s], "last": int(k == count - 1)}) for k in range(count)]
