"""Packing Python values into the flat bits of an Amaranth data layout.

The gateware declares its payloads as ``data.StructLayout``/``data.ArrayLayout``; host code,
testbenches and image writers pack with these helpers from the same layout object, so a bit's
position is defined once.
"""

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack"]


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
