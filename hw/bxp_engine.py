"""Ax-BxP matrix-vector engine: R rows of the Ax-BxP MAC over a weight memory.

y = W x for an integer matrix W (INT8 per-channel weights of an int8 image, laid out as
``bcq.sw.contract.image_layout.BxPLayout`` defines) and an integer activation vector x, in a
MAC mode chosen at run time per layer (``mode``): every row's accumulator is exactly
``bcq.sw.formats.axbxp.dot`` of the mode (the golden model), the host applies the scales.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bcq.sw.contract.beats import bxp_activation_layout, bxp_beat_layout
from bcq.sw.contract.image_layout import BxPLayout
from bcq.sw.formats.errors import ConfigError

from .bxp_mac import BxPMac
from .drain import ResultDrain
from .pipeline import write_port_signature

__all__ = ["BxPEngine"]


class BxPEngine(wiring.Component):
    """Matrix-vector engine of R Ax-BxP MACs, one per row of a group of R rows.

    Parameters
    ----------
    layout : :class:`bcq.sw.contract.image_layout.BxPLayout`
        The MAC's config and R, rows in parallel.
    max_rows, max_cols : int
        Largest matrix; set the memory depths (for the mode of fewest products per cycle).
    image : :class:`bcq.sw.host.image.Int8Layer` or None
        Initial weight memory contents (a layer of an int8 image with this layout).
    rom : bool
        Bake the image in (no write port).

    Members
    -------
    x : ``In(stream.Signature(bxp_activation_layout(config)))``
        The activation vector, P signed values a beat (``BxPLayout``), ``last`` on its final
        beat; its beats must number the weight rows' beats in ``mode``.
    mode : ``In(mode index)``
        The MAC mode (index into ``config.modes``) of this layer; hold steady while ``busy``.
    rows : ``In(range(max_rows + 1))``
        Rows of the matrix in memory; hold steady while ``busy``.
    o : ``Out(stream.Signature({value: signed(acc_bits), row}))``
        One exact accumulator per row, rows in order.
    busy : ``Out(1)``
        High from the first activation beat until the last row has left.
    wmem : write port of the weight memory (absent with ``rom``).

    Throughput: R * P products per cycle while computing (P = the mode's products per
    cycle); a vector of N columns and M rows takes about ceil(M/R) * ceil(N/P) cycles after
    it has been loaded (ceil(N/P) cycles).
    """

    def __init__(self, layout: BxPLayout, *, max_rows=64, max_cols=1024, image=None, rom=False):
        if not isinstance(layout, BxPLayout):
            raise ConfigError("layout", type(layout).__name__, "a BxPLayout")
        for name, v in (("max_rows", max_rows), ("max_cols", max_cols)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(name, v, "a positive integer")
        if image is not None and (image.shape[0] > max_rows or image.shape[1] > max_cols):
            raise ConfigError("image", image.shape, f"a layer of at most {max_rows} x {max_cols}")
        if rom and image is None:
            raise ConfigError("rom", True, "only with an image")
        self.layout, self.max_rows, self.max_cols, self.image, self.rom = layout, max_rows, max_cols, image, bool(rom)
        cfg = layout.config
        members = {
            "x": In(stream.Signature(bxp_activation_layout(cfg))),
            "mode": In(bxp_beat_layout(cfg)["mode"].shape),
            "rows": In(range(max_rows + 1)),
            "o": Out(stream.Signature(data.StructLayout({"value": signed(self.acc_bits),
                                                         "row": unsigned(max(1, (max_rows - 1).bit_length()))}))),
            "busy": Out(1),
        }
        if not self.rom:
            members["wmem"] = Out(write_port_signature(unsigned(layout.weight_width), self.weight_depth))
        super().__init__(members)

    @property
    def acc_bits(self):
        return BxPMac.accumulator_bits(self.layout.config, self.xbuf_depth)

    def products_per_cycle(self, mode):
        return self.layout.rows * self.layout.lanes(mode)

    @property
    def xbuf_depth(self):
        return max(self.layout.beats_per_row(self.max_cols, m) for m in self.layout.config.modes)

    @property
    def weight_depth(self):
        if self.rom:
            return len(self.image.weight_words)
        return max(self.layout.weight_depth(self.max_rows, self.max_cols, m) for m in self.layout.config.modes)

    def elaborate(self, platform):
        m = Module()
        lay, cfg, R = self.layout, self.layout.config, self.layout.rows
        xl = bxp_activation_layout(cfg)
        m.submodules.xbuf = xbuf = memory.Memory(shape=xl, depth=self.xbuf_depth, init=[])
        m.submodules.wmem = wmem = memory.Memory(shape=unsigned(lay.weight_width), depth=self.weight_depth,
                                                 init=self.image.weight_words if self.image is not None else [])
        if not self.rom:
            wiring.connect(m, wiring.flipped(self.wmem), wmem.write_port())
        xw, xr, wr = xbuf.write_port(), xbuf.read_port(), wmem.read_port()
        macs = []
        for r in range(R):
            m.submodules[f"row{r}"] = u = BxPMac(cfg, max_len=self.xbuf_depth)
            macs.append(u)
        done = Signal()        # the last row leaves this cycle
        present, present_last = self._issue(m, xw, xr, wr, macs[0].i.ready, done)
        wv = data.View(data.ArrayLayout(data.ArrayLayout(unsigned(cfg.n_bits), cfg.max_lanes), R), wr.data)
        for r, u in enumerate(macs):
            p = u.i.payload
            m.d.comb += [u.i.valid.eq(present), p.x.eq(xr.data.x), p.w.eq(wv[r]), p.mode.eq(self.mode),
                         p.signed.eq(1), p.last.eq(present_last)]
        # Each group's R results go to the shared drain (one row per cycle); the MACs wait on its ready.
        m.submodules.drain = drain = ResultDrain(R, self.acc_bits, self.max_rows)
        wiring.connect(m, drain.o, wiring.flipped(self.o))
        m.d.comb += [drain.valid.eq(macs[0].o.valid), drain.rows.eq(self.rows), done.eq(drain.done)]
        m.d.comb += [drain.values[r].eq(u.o.payload) for r, u in enumerate(macs)]
        m.d.comb += [u.o.ready.eq(drain.ready) for u in macs]
        return m

    def _issue(self, m, xw, xr, wr, ready, done):
        """LOAD the activation beats into the buffer, then RUN: present (group, beat) to every
        row's MAC, in lockstep (all see the same beats and stalls). Returns (present, last)."""
        n_beats, load_count = Signal(range(self.xbuf_depth + 1)), Signal(range(self.xbuf_depth + 1))
        k = Signal(range(self.xbuf_depth + 1))
        wbase = Signal(range(self.weight_depth + 1))
        row_base = Signal(range(self.max_rows + self.layout.rows + 1))
        issuing, present, present_last, advance = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [advance.eq(~present | ready), xr.addr.eq(k), wr.addr.eq(wbase + k),
                     xr.en.eq(advance), wr.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [present.eq(issuing), present_last.eq(k == n_beats - 1)]
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.x.ready.eq(1), xw.addr.eq(load_count), xw.data.eq(self.x.payload),
                             xw.en.eq(self.x.valid)]
                with m.If(self.x.valid):
                    m.d.sync += load_count.eq(load_count + 1)
                    with m.If(self.x.payload.last):
                        m.d.sync += [n_beats.eq(load_count + 1), load_count.eq(0), k.eq(0), wbase.eq(0),
                                     row_base.eq(0), issuing.eq(1)]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(advance & issuing):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == n_beats - 1):
                        m.d.sync += [k.eq(0), wbase.eq(wbase + n_beats), row_base.eq(row_base + self.layout.rows)]
                        with m.If(row_base + self.layout.rows >= self.rows):
                            m.d.sync += issuing.eq(0)
                with m.If(done):
                    m.next = "LOAD"
        with m.If(self.x.valid & self.x.ready):
            m.d.comb += self.busy.eq(1)
        return present, present_last
