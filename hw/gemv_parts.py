"""The components of the matrix-vector engine (:class:`bcq.hw.gemv.GEMV`): the activation
loader, the issuer that walks (row group, beat), the shared activation decode and the result
drain. The row datapath is in :mod:`bcq.hw.engine_rows`."""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Shape
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bcq.sw.contract.beats import activation_layout
from bcq.sw.contract.image_layout import EngineLayout

from .bcq_block import codebook_write_signature
from .engine_rows import delay, pipelined_tree, tree_levels
from .pipeline import copy_tree, registered_write

__all__ = ["ActivationDecode", "ActivationLoader", "Issuer", "issue_layout"]


def issue_layout(layout: EngineLayout, xbuf_depth, weight_depth, scale_depth):
    """One issued beat: the memory addresses to read and where the beat sits in its row and
    array (``first``/``alast``: first/last beat of a block array; ``vlast``: last of the row)."""
    return data.StructLayout({"xaddr": range(max(2, xbuf_depth)), "waddr": range(max(2, weight_depth)),
                              "saddr": range(max(2, scale_depth)), "first": 1, "alast": 1, "vlast": 1})


class ActivationLoader(wiring.Component):
    """Takes an activation vector into a buffer, then starts a run and waits for its end.

    Parameters
    ----------
    layout : :class:`EngineLayout`
    depth : int
        Buffer depth (beats of the longest vector).

    Members
    -------
    x : ``In(stream.Signature(activation_layout(layout.geometry)))``
        Accepted while no run is in progress; ``last`` ends the vector and starts the run.
    start : ``Out(1)``
        One-cycle pulse: the vector is loaded, ``n_beats`` holds its length in beats.
    n_beats : ``Out(range(depth + 1))``
    done : ``In(1)``
        The run's last result leaves: accept the next vector.
    raddr : ``In(range(depth))``, rdata : ``Out(activation_layout(...))``
        Buffer read: ``rdata`` is the beat at ``raddr`` two edges earlier (block RAM read and a
        fabric register).
    busy : ``Out(1)``
        A vector is being loaded or run.
    """

    read_latency = 2

    def __init__(self, layout: EngineLayout, depth):
        self.layout, self.depth = layout, depth
        xl = activation_layout(layout.geometry)
        super().__init__({"x": In(stream.Signature(xl)), "start": Out(1), "n_beats": Out(range(depth + 1)),
                          "done": In(1), "raddr": In(range(max(2, depth))), "rdata": Out(xl), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        xl = activation_layout(self.layout.geometry)
        m.submodules.xbuf = xbuf = memory.Memory(shape=unsigned(Shape.cast(xl).width), depth=self.depth, init=[],
                                                 attrs={"no_rw_check": 1})
        wp, rp = xbuf.write_port(), xbuf.read_port()
        m.d.comb += rp.addr.eq(self.raddr)
        m.d.sync += self.rdata.as_value().eq(rp.data)
        count = Signal(range(self.depth + 1))
        running = Signal()
        m.d.comb += [self.x.ready.eq(~running), wp.addr.eq(count), wp.data.eq(self.x.payload.as_value()),
                     wp.en.eq(self.x.valid & ~running), self.busy.eq(running | (self.x.valid & ~running))]
        with m.If(self.x.valid & ~running):
            m.d.sync += count.eq(count + 1)
            with m.If(self.x.payload.last):
                m.d.sync += [self.n_beats.eq(count + 1), count.eq(0), running.eq(1)]
                m.d.sync += self.start.eq(1)
        with m.If(self.start):
            m.d.sync += self.start.eq(0)
        with m.If(self.done):
            m.d.sync += running.eq(0)
        return m


class Issuer(wiring.Component):
    """Walks the row groups of a run beat by beat, one beat per cycle.

    A row group's results wait in one of the drain's two banks, so the issuer holds each row
    group's last beat until a bank is free for it (``credits``): the datapath behind it never
    stalls.

    Parameters
    ----------
    layout : :class:`EngineLayout`
    max_rows, xbuf_depth, weight_depth, scale_depth : int
        Memory sizes (address widths).

    Members
    -------
    start : ``In(1)``, n_beats : ``In(range(xbuf_depth + 1))``
        Begin a run of ``n_beats`` beats per row.
    rows : ``In(range(max_rows + 1))``
        Rows of the matrix.
    release : ``In(1)``
        A result bank was emptied (returns a credit).
    o : ``Out(stream.Signature(issue_layout(...), always_ready=True))``
        The issued beats.
    """

    banks = 2

    def __init__(self, layout: EngineLayout, *, max_rows, xbuf_depth, weight_depth, scale_depth):
        self.layout, self.max_rows = layout, max_rows
        self.xbuf_depth, self.weight_depth, self.scale_depth = xbuf_depth, weight_depth, scale_depth
        il = issue_layout(layout, xbuf_depth, weight_depth, scale_depth)
        super().__init__({"start": In(1), "n_beats": In(range(xbuf_depth + 1)), "rows": In(range(max_rows + 1)),
                          "release": In(1), "o": Out(stream.Signature(il, always_ready=True))})

    def elaborate(self, platform):
        m = Module()
        R, bpa = self.layout.lanes, self.layout.beats_per_array
        p = self.o.payload
        k = Signal(range(self.xbuf_depth + 1))
        bia = Signal(range(bpa))
        row_base = Signal(range(self.max_rows + R + 1))
        issuing = Signal()
        credits = Signal(range(self.banks + 1), init=self.banks)
        vlast = Signal()
        waddr, saddr = Signal(len(p.waddr), name="waddr"), Signal(len(p.saddr), name="saddr")
        m.d.comb += [vlast.eq(k == self.n_beats - 1), p.waddr.eq(waddr), p.saddr.eq(saddr),
                     self.o.valid.eq(issuing & (~vlast | (credits != 0))),
                     p.xaddr.eq(k), p.first.eq(bia == 0), p.alast.eq(bia == bpa - 1), p.vlast.eq(vlast)]
        take = self.o.valid & vlast
        m.d.sync += credits.eq(credits - take + self.release)
        with m.If(self.start):
            m.d.sync += [k.eq(0), bia.eq(0), row_base.eq(0), issuing.eq(1), waddr.eq(0), saddr.eq(0)]
        with m.Elif(self.o.valid):
            m.d.sync += [k.eq(k + 1), bia.eq(Mux(bia == bpa - 1, 0, bia + 1)), waddr.eq(waddr + 1)]
            with m.If(bia == bpa - 1):
                m.d.sync += saddr.eq(saddr + 1)
            with m.If(vlast):
                m.d.sync += [k.eq(0), row_base.eq(row_base + R)]
                with m.If(row_base + R >= self.rows):
                    m.d.sync += issuing.eq(0)
        return m


class ActivationDecode(wiring.Component):
    """The activation codewords of a beat, decoded once for every row: one codebook table per
    two lanes (a true dual-port block RAM: port A serves the codebook write port and lane 2k,
    port B lane 2k+1), each read registered; and the beat's codeword sum for the rows' offset
    correction (:class:`bcq.hw.engine_rows.RowPair`).

    Parameters
    ----------
    layout : :class:`EngineLayout`
    codebooks : Codebooks or None
        Initial table contents.
    rom : bool
        No write port.

    Members
    -------
    beat : ``In(activation_layout(layout.geometry))``
        Only ``idx`` and ``sel`` are read.
    cbw : ``Out(codebook_write_signature(config))`` (absent with ``rom``)
        Codebook writes; write only while no run is in progress.
    words : ``Out(data.ArrayLayout(signed(entry_bits), S))``
        The codewords of the beat presented ``latency`` (= 3) edges earlier: the indices and
        selectors registered (they come from the activation block RAM, the tables lie across
        the die), the table read, the read data registered.
    x_sum : ``Out(signed(entry_bits + tree_levels(S)))``
        Their sum, ``sum_latency`` edges after the beat.
    """

    latency = 3

    def __init__(self, layout: EngineLayout, *, codebooks=None, rom=False):
        cfg = layout.config
        self.layout, self.codebooks, self.rom = layout, codebooks, rom
        S = layout.scalars_per_beat
        members = {"beat": In(activation_layout(layout.geometry)),
                   "words": Out(data.ArrayLayout(signed(cfg.entry_bits), S)),
                   "x_sum": Out(signed(cfg.entry_bits + tree_levels(S)))}
        if not rom:
            members["cbw"] = Out(codebook_write_signature(cfg))
        super().__init__(members)

    @property
    def sum_latency(self):
        return self.latency + tree_levels(self.layout.scalars_per_beat)

    def elaborate(self, platform):
        m = Module()
        cfg, S = self.layout.config, self.layout.scalars_per_beat
        init = self.codebooks.entries.flatten().tolist() if self.codebooks is not None else []
        depth = cfg.n_codebooks * cfg.n_entries
        addr = []
        for j in range(S):
            a = Signal(cfg.index_bits + cfg.selector_bits, name=f"x_addr{j}")
            m.d.sync += a.eq(Cat(self.beat.idx[j], self.beat.sel[j // cfg.block_len]) if cfg.selector_bits
                             else self.beat.idx[j])
            addr.append(a)
        tables = -(-S // 2)
        if not self.rom:
            # The write enable selects every table's port A address: one copy per quarter of the
            # tables (a single register drove them all across the die, 17.3 ns in a routed build).
            cb_en, cb_addr, cb_data = registered_write(m, self.cbw, "cbw")
            en_copies = copy_tree(m, cb_en, "cbw_en_g", min(tables, 4))
            cb_addr, cb_data = delay(m, cb_addr, 2, "cbw_addr_g"), delay(m, cb_data, 2, "cbw_data_g")
        for k in range(0, S, 2):
            # no_rw_check: codebooks are written between runs; without it Yosys adds read-old-data
            # emulation around every table.
            mem = memory.Memory(shape=signed(cfg.entry_bits), depth=depth, init=init, attrs={"no_rw_check": 1})
            m.submodules[f"codebook{k // 2}"] = mem
            ports = [mem.read_port() for _ in range(min(2, S - k))]
            if self.rom:
                m.d.comb += ports[0].addr.eq(addr[k])
            else:
                # One address for the write port and lane k's read: Yosys then puts both on port A.
                wp = mem.write_port()
                a = Signal(range(depth), name=f"port_a{k // 2}")
                en = en_copies[(k // 2) * len(en_copies) // tables]
                m.d.comb += [a.eq(Mux(en, cb_addr, addr[k])), wp.addr.eq(a), wp.en.eq(en),
                             wp.data.eq(cb_data), ports[0].addr.eq(a)]
            if len(ports) > 1:
                m.d.comb += ports[1].addr.eq(addr[k + 1])
            for j, rp in zip((k, k + 1), ports):
                m.d.sync += self.words[j].eq(rp.data)
        m.d.comb += self.x_sum.eq(pipelined_tree(m, "x_sum", list(self.words), self.x_sum.shape().width))
        return m
