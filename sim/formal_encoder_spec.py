"""Specification and proof harness of the encoder's nearest-entry stage (``sim/formal.py`` runs it).

The rule is written here from the float encoder's definition (section 1 of docs/arithmetic.md),
not from the gateware's key: for the normalized scalar at ``y = t/2``, the chosen entry is nearest
to ``y`` (``|t - 2 e|`` least), ties to the smaller value, then to the lower index. (Every ``y`` in
``((t-1)/2, t/2]`` has that nearest entry, docs/arithmetic.md section 7.) Nothing from ``hw/`` is reused here.
"""

from amaranth import Array, Module, Signal, signed
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert

from bcq.hw.bcq_encoder import NearestEntry
from bcq.sw.formats.config import BCQConfig

from .formal_spec import _harness

__all__ = ["spec_prefers", "nearest_harness", "NEAREST_DEPTH"]

# The stage is combinational: one step checks every input.
NEAREST_DEPTH = 1


def spec_prefers(t, ei, i, ek, k):
    """Whether entry ``(ei, index i)`` is at least as good as ``(ek, index k)`` for ``y = t/2``."""
    di, dk = abs(t - 2 * ei), abs(t - 2 * ek)
    return (di < dk) | ((di == dk) & (ei < ek)) | ((di == dk) & (ei == ek) & (i <= k))


def nearest_harness(config: BCQConfig):
    """Returns ``(module, clock)``: for every ``t`` of the port's width and every codebook, the
    index :class:`NearestEntry` gives is preferred (:func:`spec_prefers`) to every other index,
    and its ``value`` is that entry."""
    m, clk = _harness()
    m.submodules.dut = dut = NearestEntry(config)
    t = Signal(dut.t.shape(), name="t")
    entries = [Signal(signed(config.entry_bits), name=f"e{i}") for i in range(config.n_entries)]
    m.d.comb += t.eq(AnySeq(len(t)))
    m.d.comb += [e.eq(AnySeq(config.entry_bits)) for e in entries]
    m.d.comb += [dut.t.eq(t)] + [dut.entries[i].eq(e) for i, e in enumerate(entries)]
    chosen = Array(entries)[dut.index]
    for k, ek in enumerate(entries):
        m.d.comb += Assert(spec_prefers(t, chosen, dut.index, ek, k))
    m.d.comb += Assert(dut.value == chosen)
    return m, clk
