"""BCQ matrix-vector engine: R lanes of the BCQ dot-product unit over a weight memory.

y = W x for a LO-BCQ-encoded matrix W (in the engine's memories, laid out as
``bcq.sw.contract.image_layout.EngineLayout`` defines) and a LO-BCQ-encoded activation vector x.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.hdl import Shape
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import activation_layout
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import Arithmetic
from bcq.sw.host.image import LayerImage

from .bcq_block import codebook_address, codebook_lookup, codebook_write_signature
from .bcq_dot import BCQDot
from .pipeline import write_port_signature

__all__ = ["GEMV"]


class GEMV(wiring.Component):
    """Matrix-vector engine.

    Parameters
    ----------
    layout : :class:`bcq.sw.contract.image_layout.EngineLayout`
        Format config, lanes R (rows in parallel) and blocks per cycle B.
    max_rows, max_cols : int
        Largest matrix; set the memory depths (cols a multiple of LA).
    codebooks : Codebooks or None
        Initial codebook contents.
    image : :class:`bcq.sw.host.image.LayerImage` or None
        Initial weight and scale memory contents (a layer of an image with this layout).
    rom : bool
        Bake codebooks and image in (no write ports).

    Members
    -------
    x : ``In(stream.Signature(activation_layout(layout.geometry)))``
        The activation vector, beat by beat (indices, selectors, the array's scale code),
        ``last`` on its final beat. Its length must equal the matrix's columns.
    o : ``Out(stream.Signature({value: signed(acc_bits), row}))``
        One exact accumulator per row, rows in order (value as in ``bcq.sw.formats.golden``).
    rows : ``In(range(max_rows + 1))``
        Rows of the matrix in memory; hold steady while ``busy``.
    busy : ``Out(1)``
        High from the first activation beat until the last row has left.
    wmem, smem, cbw : write ports of the weight, scale and codebook memories (absent with ``rom``).

    Throughput: R * B * Lb MACs per cycle while computing; a vector of N columns and M rows
    takes about ceil(M/R) * N/(B*Lb) cycles after it has been loaded (N/(B*Lb) cycles).
    """

    def __init__(self, layout: EngineLayout, *, max_rows=64, max_cols=1024, codebooks: Codebooks | None = None,
                 image: LayerImage | None = None, rom=False):
        cfg = layout.config
        if not isinstance(max_rows, int) or max_rows < 1:
            raise ConfigError("max_rows", max_rows, "a positive integer")
        if not isinstance(max_cols, int) or max_cols < 1 or max_cols % cfg.array_len:
            raise ConfigError("max_cols", max_cols, f"a positive multiple of array_len={cfg.array_len}")
        if image is not None and (image.shape[0] > max_rows or image.shape[1] > max_cols):
            raise ConfigError("image", image.shape, f"a layer of at most {max_rows} x {max_cols}")
        if rom and (codebooks is None or image is None):
            raise ConfigError("rom", True, "only with codebooks and an image")
        self.layout, self.max_rows, self.max_cols = layout, max_rows, max_cols
        self.codebooks, self.image, self.rom = codebooks, image, bool(rom)
        self.arith = Arithmetic(cfg, max_cols)
        members = {
            "x": In(stream.Signature(activation_layout(layout.geometry))),
            "o": Out(stream.Signature(data.StructLayout({"value": signed(self.acc_bits),
                                                         "row": unsigned(max(1, (max_rows - 1).bit_length()))}))),
            "rows": In(range(max_rows + 1)),
            "busy": Out(1),
        }
        if not self.rom:
            members["wmem"] = Out(write_port_signature(unsigned(layout.weight_width), self.weight_depth))
            members["smem"] = Out(write_port_signature(unsigned(layout.scale_width), self.scale_depth))
            members["cbw"] = Out(codebook_write_signature(cfg))
        super().__init__(members)

    @property
    def acc_bits(self):
        return self.arith.acc_bits

    @property
    def macs_per_cycle(self):
        return self.layout.lanes * self.layout.scalars_per_beat

    @property
    def weight_depth(self):
        return self.layout.weight_depth(self.max_rows, self.max_cols)

    @property
    def scale_depth(self):
        return self.layout.scale_depth(self.max_rows, self.max_cols)

    @property
    def xbuf_depth(self):
        return self.layout.beats_per_row(self.max_cols)

    def elaborate(self, platform):
        m = Module()
        lay, cfg = self.layout, self.layout.config
        R, S, B = lay.lanes, lay.scalars_per_beat, lay.blocks_per_cycle
        bpa = lay.beats_per_array

        # Memories: activation buffer, weights, scales.
        xl = activation_layout(lay.geometry)
        m.submodules.xbuf = xbuf = memory.Memory(shape=unsigned(Shape.cast(xl).width), depth=self.xbuf_depth, init=[])
        m.submodules.wmem = wmem = memory.Memory(shape=unsigned(lay.weight_width), depth=self.weight_depth,
                                                 init=self.image.weight_words if self.image is not None else [])
        m.submodules.smem = smem = memory.Memory(shape=unsigned(lay.scale_width), depth=self.scale_depth,
                                                 init=self.image.scale_words if self.image is not None else [])
        if not self.rom:
            for mem, port in ((wmem, self.wmem), (smem, self.smem)):
                wiring.connect(m, wiring.flipped(port), mem.write_port())
        xw = xbuf.write_port()
        xr, wr, sr = xbuf.read_port(), wmem.read_port(), smem.read_port()

        # Lanes.
        lanes = []
        for r in range(R):
            u = BCQDot(cfg, blocks_per_cycle=B, max_len=self.max_cols, codebooks=self.codebooks,
                       codebook_rom=self.rom, external_x=True)
            m.submodules[f"lane{r}"] = u
            lanes.append(u)
        if not self.rom:
            wiring.connect(m, wiring.flipped(self.cbw), *(u.cbw for u in lanes))
        lanes_ready = lanes[0].i.ready  # all lanes see the same beats and stalls: lockstep

        # Load: activation beats into the buffer; count beats and arrays.
        n_beats = Signal(range(self.xbuf_depth + 1))
        n_arrays = Signal(range(self.xbuf_depth // bpa + 1))
        load_count = Signal(range(self.xbuf_depth + 1))
        # Run: issue (group, beat) to the lanes.
        k = Signal(range(self.xbuf_depth + 1))
        beat_in_array = Signal(range(bpa))
        array = Signal(range(self.xbuf_depth // bpa + 1))
        wbase = Signal(range(self.weight_depth + 1))
        sbase = Signal(range(self.scale_depth + 1))
        row_base = Signal(range(self.max_rows + R + 1))
        issuing = Signal()
        present = Signal()       # memory outputs hold a beat for the lanes
        present_last = Signal()
        advance = Signal()
        m.d.comb += advance.eq(~present | lanes_ready)
        done = Signal()          # the last row leaves this cycle

        m.d.comb += [
            xr.addr.eq(k), wr.addr.eq(wbase + k), sr.addr.eq(sbase + array),
            xr.en.eq(advance), wr.en.eq(advance), sr.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [present.eq(issuing), present_last.eq(k == n_beats - 1)]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.x.ready.eq(1)
                xp = self.x.payload
                m.d.comb += [xw.addr.eq(load_count), xw.data.eq(xp.as_value()), xw.en.eq(self.x.valid)]
                with m.If(self.x.valid):
                    m.d.sync += load_count.eq(load_count + 1)
                    with m.If(xp.last):
                        m.d.sync += [n_beats.eq(load_count + 1), n_arrays.eq((load_count + 1) // bpa),
                                     load_count.eq(0), k.eq(0), beat_in_array.eq(0), array.eq(0),
                                     wbase.eq(0), sbase.eq(0), row_base.eq(0), issuing.eq(1)]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(advance & issuing):
                    m.d.sync += [k.eq(k + 1), beat_in_array.eq(beat_in_array + 1)]
                    with m.If(beat_in_array == bpa - 1):
                        m.d.sync += [beat_in_array.eq(0), array.eq(array + 1)]
                    with m.If(k == n_beats - 1):
                        m.d.sync += [k.eq(0), array.eq(0), beat_in_array.eq(0),
                                     wbase.eq(wbase + n_beats), sbase.eq(sbase + n_arrays),
                                     row_base.eq(row_base + R)]
                        with m.If(row_base + R >= self.rows):
                            m.d.sync += issuing.eq(0)
                with m.If(done):
                    m.next = "LOAD"
        with m.If(self.x.valid & self.x.ready):
            m.d.comb += self.busy.eq(1)

        # Present the beat to every lane; one shared activation-codeword lookup.
        xv = data.View(xl, xr.data)
        wv = data.View(lay.weight_word, wr.data)
        sv = data.View(lay.scale_word, sr.data)
        init = self.codebooks.entries.flatten().tolist() if self.codebooks is not None else []
        x_words = [codebook_lookup(m, f"x_codebook{j}", cfg, init, None if self.rom else self.cbw,
                                   codebook_address(cfg, xv.idx[j], xv.sel[j // cfg.block_len]
                                                    if cfg.selector_bits else None), lanes_ready)
                   for j in range(S)]
        for r, u in enumerate(lanes):
            p = u.i.payload
            m.d.comb += [u.i.valid.eq(present), p.w_idx.eq(wv[r].idx), p.w_scale.eq(sv[r]),
                         p.x_scale.eq(xv.scale), p.last.eq(present_last)]
            if cfg.selector_bits:
                m.d.comb += p.w_sel.eq(wv[r].sel)
            for j in range(S):
                m.d.comb += u.x_words[j].eq(x_words[j])

        # Serialize each group's R results into rows; the lanes wait while a group drains.
        vals = [Signal(signed(self.acc_bits), name=f"result{r}") for r in range(R)]
        draining = Signal()
        out_lane = Signal(range(R))
        out_base = Signal(range(self.max_rows + R + 1))
        m.d.comb += [u.o.ready.eq(~draining) for u in lanes]
        with m.If(lanes[0].o.valid & ~draining):
            m.d.sync += [v.eq(u.o.payload) for v, u in zip(vals, lanes)]
            m.d.sync += [draining.eq(1), out_lane.eq(0)]
        row = Signal(range(self.max_rows + R + 1))
        m.d.comb += [row.eq(out_base + out_lane),
                     self.o.valid.eq(draining & (row < self.rows)),
                     self.o.payload.row.eq(row)]
        with m.Switch(out_lane):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += self.o.payload.value.eq(vals[r])
        step = Signal()
        m.d.comb += step.eq(draining & (self.o.ready | (row >= self.rows)))
        with m.If(step):
            m.d.sync += out_lane.eq(out_lane + 1)
            with m.If(out_lane == R - 1):
                m.d.sync += [draining.eq(0), out_base.eq(out_base + R)]
                with m.If(out_base + R >= self.rows):
                    m.d.comb += done.eq(1)
                    m.d.sync += out_base.eq(0)
        return m
