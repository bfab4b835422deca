"""Result drain shared by the matrix-vector engines: a row group's R results in, one row per
cycle out, padding rows dropped."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .pipeline import skid_buffer

__all__ = ["ResultDrain"]


class ResultDrain(wiring.Component):
    """Takes a row group's R results at once and sends them one row per cycle.

    Two banks: one drains while the next group's results may arrive in the other. A group
    is taken on ``valid & ready``; ``ready`` is low while the second bank holds a group that stays.
    The rows leave through a two-entry skid buffer (``o`` is a register, and so is the space the
    bank shifts into): the bank's shift enable, which fans out to every bit of its R results,
    never waits on ``o.ready``, whose logic lies downstream (in a 256-MAC ULX3S build, the
    host link's handshake into 1.6k such enables was 11 ns of logic before any routing).
    (:class:`bcq.hw.gemv.GEMV`'s issuer keeps credits, so its groups always find ``ready``;
    :class:`bcq.hw.bxp_engine.BxPEngine` stalls its MACs on it.)

    Parameters
    ----------
    lanes : int
        R, rows per group.
    acc_bits : int
    max_rows : int

    Members
    -------
    valid : ``In(1)``, values : ``In(data.ArrayLayout(signed(acc_bits), lanes))``
        A group's results.
    ready : ``Out(1)``
        A group offered now is taken.
    rows : ``In(range(max_rows + 1))``
        Rows of the matrix: rows past it are dropped.
    o : ``Out(stream.Signature({value, row}))``
    release : ``Out(1)``
        A bank was emptied (one-cycle pulse).
    done : ``Out(1)``
        The matrix's last row is taken from ``o`` (one-cycle pulse; with ``rows`` 0, when the
        group has been dropped).
    """

    def __init__(self, lanes, acc_bits, max_rows):
        self.lanes, self.acc_bits, self.max_rows = lanes, acc_bits, max_rows
        ol = data.StructLayout({"value": signed(acc_bits), "row": unsigned(max(1, (max_rows - 1).bit_length()))})
        super().__init__({"valid": In(1), "ready": Out(1), "values": In(data.ArrayLayout(signed(acc_bits), lanes)),
                          "rows": In(range(max_rows + 1)), "o": Out(stream.Signature(ol)),
                          "release": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        R = self.lanes
        hold = Signal.like(self.values, name="hold")
        hold_full = Signal()
        out = [Signal(signed(self.acc_bits), name=f"out{r}") for r in range(R)]
        out_full = Signal()
        lane = Signal(range(max(R, 2)))   # one bit even for one lane: no zero-width vector in the Verilog
        base = Signal(range(self.max_rows + R + 1))
        row = Signal(range(self.max_rows + R + 1))
        # The rows leave through a skid buffer; each knows whether it is the matrix's last row
        # (`done` when that one is taken).
        entry = data.StructLayout({"value": signed(self.acc_bits), "row": self.o.payload.row.shape(), "final": 1})
        into, out_q = stream.Signature(entry).create(), stream.Signature(entry).create()
        skid_buffer(m, into, out_q, "skid")
        step = Signal()
        m.d.comb += [row.eq(base + lane), step.eq(out_full & into.ready),
                     into.valid.eq(step & (row < self.rows)), into.p.value.eq(out[0]), into.p.row.eq(row),
                     into.p.final.eq(row == self.rows - 1),
                     self.o.valid.eq(out_q.valid), self.o.p.value.eq(out_q.p.value), self.o.p.row.eq(out_q.p.row),
                     out_q.ready.eq(self.o.ready), self.done.eq(out_q.valid & self.o.ready & out_q.p.final)]
        finish = step & (lane == R - 1)
        with m.If(step):
            # The bank shifts by one row per step, so the output needs no R:1 multiplexer.
            m.d.sync += [out[r].eq(out[r + 1]) for r in range(R - 1)]
            m.d.sync += lane.eq(Mux(lane == R - 1, 0, lane + 1))
        with m.If(finish):
            m.d.sync += [out_full.eq(0), base.eq(base + R)]
            m.d.comb += self.release.eq(1)
            with m.If(base + R >= self.rows):
                m.d.sync += base.eq(0)
                with m.If(self.rows == 0):      # no row leaves: done with the (only) group
                    m.d.comb += self.done.eq(1)
        # Move the held bank into the output bank once that is (or becomes) empty.
        move = Signal()
        m.d.comb += move.eq(hold_full & (~out_full | finish))
        with m.If(move):
            m.d.sync += [o.eq(hold[r]) for r, o in enumerate(out)] + [out_full.eq(1), hold_full.eq(0)]
        # The second bank takes a group when empty or emptying this cycle (GEMV's credits count on the
        # latter: a group may arrive in the cycle its bank moves on).
        m.d.comb += self.ready.eq(~hold_full | move)
        with m.If(self.valid & self.ready):
            m.d.sync += [hold.eq(self.values), hold_full.eq(1)]
        return m
