"""Packing Python values into the flat bits of an Amaranth data layout.

The gateware declares its payloads as ``data.StructLayout``/``data.ArrayLayout``; host code,
testbenches and image writers pack with these helpers from the same layout object, so a bit's
position is defined once.
"""

from amaranth.hdl import Shape
from amaranth.lib import data
import numpy as np

__all__ = ["pack", "pack_words", "words_to_int"]


def pack(layout, value):
    """``value``: an int for a plain shape, a dict for a struct, a sequence for an array."""
    if isinstance(layout, data.StructLayout):
        word = 0
        for name, field in layout:
            if name not in value:
                raise KeyError(f"field {name!r} missing from packed value")
            word |= pack(field.shape, value[name]) << field.offset
        extra = set(value) - {name for name, _ in layout}
        if extra:
            raise KeyError(f"fields {sorted(extra)} are not in the layout")
        return word
    if isinstance(layout, data.ArrayLayout):
        elem_width = Shape.cast(layout.elem_shape).width
        values = list(value)
        if len(values) != layout.length:
            raise ValueError(f"array of {layout.length} elements given {len(values)}")
        word = 0
        for i, v in enumerate(values):
            word |= pack(layout.elem_shape, v) << (i * elem_width)
        return word
    shape = Shape.cast(layout)
    v = int(value)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"{v} does not fit {shape}")
    return v & ((1 << shape.width) - 1)


def _leaves(layout, value, offset):
    """(bit offset, width, int64 array) of every scalar field of ``layout`` in ``value``
    (arrays for :func:`pack_words`); an array of plain elements filling at most 64 bits is merged
    into one leaf, so a beat of 4-bit indices costs one numpy pass, not one per index."""
    if isinstance(layout, data.StructLayout):
        names = {name for name, _ in layout}
        extra = set(value) - names
        if extra:
            raise KeyError(f"fields {sorted(extra)} are not in the layout")
        for name, field in layout:
            if name not in value:
                raise KeyError(f"field {name!r} missing from packed value")
            yield from _leaves(field.shape, value[name], offset + field.offset)
        return
    if isinstance(layout, data.ArrayLayout):
        elem = layout.elem_shape
        ew = Shape.cast(elem).width
        if isinstance(elem, data.Layout):   # elements are structs/arrays: a sequence of their values
            if len(value) != layout.length:
                raise ValueError(f"array of {layout.length} elements given {len(value)}")
            for i in range(layout.length):
                yield from _leaves(elem, value[i], offset + i * ew)
            return
        v = np.asarray(value)
        if v.ndim != 2 or v.shape[1] != layout.length:
            raise ValueError(f"array of {layout.length} elements given shape {v.shape}")
        if ew * layout.length > 64:
            for i in range(layout.length):
                yield from _leaves(elem, v[:, i], offset + i * ew)
            return
        mask = np.uint64((1 << ew) - 1)
        merged = np.zeros(v.shape[0], dtype=np.uint64)
        for i in range(layout.length):
            merged |= (v[:, i].astype(np.int64).astype(np.uint64) & mask) << np.uint64(i * ew)
        yield offset, ew * layout.length, merged
        return
    shape = Shape.cast(layout)
    v = np.asarray(value)
    if v.ndim != 1:
        raise ValueError(f"field of {shape} given shape {v.shape}, one value per row needed")
    yield offset, shape.width, v.astype(np.int64).astype(np.uint64) & np.uint64((1 << shape.width) - 1)


def pack_words(layout, value, count):
    """Vectorized :func:`pack`: ``count`` values of ``layout`` as 32-bit little-endian words.

    ``value`` is, per layout: a dict of field values for a struct; a ``[count, length]`` array
    for an array of plain elements (a sequence of element values for an array of structs); a
    ``[count]`` array for a plain shape. Values are written as
    two's complement, cut to the field's width (callers keep them in range). Returns a uint32
    array ``[count, ceil(width / 32)]``: word 0 holds bits 31..0, the layout's bit 0 is word 0's
    bit 0, the order Verilator keeps a wide port in (``VlWide``), so a file of these words is
    what a compiled testbench puts on the port.
    """
    width = Shape.cast(layout).width
    words = np.zeros((count, max(1, -(-width // 32))), dtype=np.uint32)
    for offset, w, v in _leaves(layout, value, 0):
        if v.shape[0] != count:
            raise ValueError(f"{v.shape[0]} values for {count} rows")
        while w > 0:
            k, sh = divmod(offset, 32)
            take = min(w, 32 - sh)
            part = v & np.uint64((1 << take) - 1)
            words[:, k] |= (part << np.uint64(sh)).astype(np.uint32)
            v = v >> np.uint64(take)
            offset, w = offset + take, w - take
    return words


def words_to_int(words):
    """One row of :func:`pack_words` output back to a Python int (for messages and tests)."""
    return sum(int(w) << (32 * k) for k, w in enumerate(words))
