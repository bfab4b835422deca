"""Specification and proof harness of the encoder's nearest-entry stage (``sim/formal.py`` runs it).

The rule is written here from the float encoder's definition (section 1 of docs/arithmetic.md),
not from the gateware's key: for the normalized scalar at ``y = t/2``, the chosen entry is nearest
to ``y`` (``|t - 2 e|`` least), ties to the smaller value, then to the lower index. (Every ``y`` in
``((t-1)/2, t/2]`` has that nearest entry, docs/arithmetic.md section 7.) Nothing from ``hw/`` is reused here.
"""

from amaranth import Const, Module, Signal, signed
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert

from bcq.hw.bcq_encoder import BCQEncoder, NearestEntry
from bcq.sw.formats.config import BCQConfig

from .formal_spec import _delayed, _harness

__all__ = ["spec_prefers", "nearest_harness", "NEAREST_DEPTH", "NEAREST_ENTRIES", "NEAREST_LATENCY"]

# The stage as the encoder's table fill instantiates it (pipelined); one step more than its
# latency checks every input.
NEAREST_LATENCY = BCQEncoder.FILL_SEARCH_LATENCY
NEAREST_DEPTH = NEAREST_LATENCY + 1
# Entries of the proven codebook: 2, at the real widths. The stage is one key per entry (the
# same expression for each) and a balanced tree of identical two-input nodes that keep the lesser
# (key, position) pair, the earlier on equal keys; that pair order is a total order, so the tree
# gives its minimum over all 16 entries. What needs proof is one node on two keys against the
# rule, which this is. (A solver on all 16 free entries, or 5, ran for over 10 minutes; 3 take
# 40 s.) The 16-entry stage is also checked against the specification's nearest_entries for every
# t by simulation (tests/test_bcq_encoder_amaranth.py::test_nearest_entry_all_t_against_the_spec).
NEAREST_ENTRIES = 2


def spec_prefers(t, ei, i, ek, k):
    """Whether entry ``(ei, index i)`` is at least as good as ``(ek, index k)`` for ``y = t/2``."""
    di, dk = abs(t - 2 * ei), abs(t - 2 * ek)
    return (di < dk) | ((di == dk) & (ei < ek)) | ((di == dk) & (ei == ek) & (i <= k))


def nearest_harness(config: BCQConfig, n_entries=NEAREST_ENTRIES, latency=NEAREST_LATENCY):
    """Returns ``(module, clock)``: for every ``t`` of the port's width and every codebook of
    ``n_entries`` entries of the config's width, new every cycle, the index :class:`NearestEntry`
    (of ``latency`` register stages) gives ``latency`` edges later is preferred
    (:func:`spec_prefers`) to every other index, and its ``value`` is that entry."""
    m, clk = _harness()
    m.submodules.dut = dut = NearestEntry(config, n_entries, latency=latency)
    t = Signal(dut.t.shape(), name="t")
    entries = [Signal(signed(config.entry_bits), name=f"e{i}") for i in range(n_entries)]
    m.d.comb += t.eq(AnySeq(len(t)))
    m.d.comb += [e.eq(AnySeq(config.entry_bits)) for e in entries]
    m.d.comb += [dut.t.eq(t)] + [dut.entries[i].eq(e) for i, e in enumerate(entries)]
    # The inputs the outputs answer: ``latency`` edges old (checked once that many have passed).
    t_was, full = _delayed(m, Const(1), t, latency, "t_was")
    e_was = [_delayed(m, Const(1), e, latency, f"e{i}_was")[0] for i, e in enumerate(entries)]
    # Split on the chosen index rather than indexing the entries by it: the same property, and
    # the solver never reasons through a mux selected by the design's output.
    with m.If(full):
        m.d.comb += Assert(dut.index < n_entries)
        for i, ei in enumerate(e_was):
            with m.If(dut.index == i):
                m.d.comb += Assert(dut.value == ei)
                for k, ek in enumerate(e_was):
                    if k != i:
                        m.d.comb += Assert(spec_prefers(t_was, ei, i, ek, k))
    return m, clk
