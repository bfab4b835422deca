"""Beats of 16-bit float activations (the on-chip encoder's input stream) and their packer.

One beat carries ``scalars_per_beat`` 16-bit patterns (element 0 in the low bits) and ``last``
(the vector's final beat), the same cut into beats as the encoded activation beats
(:func:`bcq.sw.contract.beats.activation_beats`), so beat ``k`` in gives beat ``k`` out.
"""

from amaranth import unsigned
from amaranth.lib import data

from .geometry import BeatGeometry
from .packing import pack

__all__ = ["float16_layout", "float16_beats"]


def float16_layout(geometry: BeatGeometry):
    """One input beat: ``data`` (``scalars_per_beat`` 16-bit patterns) and ``last``."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(16), geometry.scalars_per_beat),
                              "last": unsigned(1)})


def float16_beats(bits, geometry: BeatGeometry):
    """Packed beats (ints) of one vector of 16-bit patterns (a sequence of ints 0..65535 whose
    length is a positive multiple of ``array_len``)."""
    bits = [int(b) for b in bits]
    count = geometry.beats(len(bits))
    s = geometry.scalars_per_beat
    layout = float16_layout(geometry)
    return [pack(layout, {"data": bits[k * s:(k + 1) * s], "last": int(k == count - 1)}) for k in range(count)]
