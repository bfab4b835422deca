"""BCQ matrix-vector engine: R rows computed in parallel, B blocks (B * Lb MACs) per row and cycle.

y = W x for a LO-BCQ-encoded matrix W (in the engine's memories, laid out as
``bcq.sw.contract.image_layout.EngineLayout`` defines: weights as decoded codewords) and a
LO-BCQ-encoded activation vector x. Structure, each a component joined by streams or plain
ports (``bcq.hw.gemv_parts``, ``bcq.hw.engine_rows``)::

    x -> ActivationLoader (buffer) -> Issuer (row group, beat) -> memory reads
      -> ActivationDecode (once for all rows) -> RowPair x R/2 (two rows per multiplier)
      -> ScaleAccumulate x R -> ResultDrain (two banks) -> o
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bcq.sw.contract.beats import activation_layout
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import Arithmetic
from bcq.sw.formats.output_float import OUTPUT_FORMATS
from bcq.sw.host.image import LayerImage

from .bcq_block import codebook_write_signature
from .drain import ResultDrain
from .engine_rows import RowPair, ScaleAccumulate, delay
from .gemv_parts import ActivationDecode, ActivationLoader, Issuer
from .output_float import OutputFloat
from .pipeline import copy_tree, registered_write, write_port_signature

__all__ = ["GEMV"]


def _per_group(m, value, name, groups):
    """``value`` two edges later, one copy per row group from :func:`copy_tree` (at most 4
    copies: past 4 groups, neighbouring groups share one)."""
    copies = copy_tree(m, value, name, min(groups, 4))
    return [copies[g * len(copies) // groups] for g in range(groups)]


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
    group_rows : int
        Rows that share one register copy of the activation codewords and the beat's controls
        (bounds their fan-out; up to 4 copies, so past 4 groups neighbouring groups share one).
    multiplier_rows : int or None
        Rows (from row 0, in pairs) whose products use multipliers (two rows per multiplier:
        :class:`bcq.hw.engine_rows.RowPair`); the others add bit planes in the fabric
        (``fabric``). None: every row. A board with few multipliers spreads its rows over both.
    output : str or None
        None: ``o.value`` is the exact accumulator. ``"bf16"`` or ``"fp32"``: it is
        ``acc * 2**exp`` rounded to nearest even to that float's bits on chip
        (:class:`bcq.hw.output_float.OutputFloat`, ``OutputFloat.latency`` more edges).

    Members
    -------
    x : ``In(stream.Signature(activation_layout(layout.geometry)))``
        The activation vector, beat by beat (indices, selectors, the array's scale code),
        ``last`` on its final beat. Its length must equal the matrix's columns.
    o : ``Out(stream.Signature({value: signed(acc_bits), row}))``
        One exact accumulator per row, rows in order (value as in ``bcq.sw.formats.golden``);
        with ``output``, ``value`` is ``unsigned(16 or 32)``, the float's bits
        (``bcq.sw.formats.output_float.float_bits(acc, exp, output)``).
    exp : ``In(signed(10))``, only with ``output``
        The weight of the accumulator's LSB: the golden model's ``out_exp`` plus the exponents of
        power-of-two tensor scales. Hold it while results are in flight.
    rows : ``In(range(max_rows + 1))``
        Rows of the matrix in memory; hold steady while ``busy``.
    busy : ``Out(1)``
        High from the first activation beat until the last row has left.
    wmem, smem, cbw : write ports of the weight, scale and codebook memories (absent with ``rom``).
        The codebook table decodes activations only (weights are stored decoded); write it
        while no vector is in flight.

    Throughput: R * B * Lb MACs per cycle while computing; a vector of N columns and M rows
    takes about ceil(M/R) * N/(B*Lb) cycles after it has been loaded (N/(B*Lb) cycles), plus
    ``latency`` + R cycles for the last row group to drain. A row group's last beat waits
    while both result banks are full, so the datapath itself never stalls.
    Latency: ``latency`` edges from a row group's last beat to its results in the drain.
    """

    def __init__(self, layout: EngineLayout, *, max_rows=64, max_cols=1024, codebooks: Codebooks | None = None,
                 image: LayerImage | None = None, rom=False, group_rows=4, multiplier_rows=None, output=None):
        cfg = layout.config
        if multiplier_rows is not None and (not isinstance(multiplier_rows, int) or isinstance(multiplier_rows, bool)
                                            or not 0 <= multiplier_rows <= layout.lanes or multiplier_rows % 2):
            raise ConfigError("multiplier_rows", multiplier_rows, f"None or an even number of rows 0..{layout.lanes}")
        if not isinstance(group_rows, int) or isinstance(group_rows, bool) or group_rows < 1:
            raise ConfigError("group_rows", group_rows, "a positive number of rows")
        if output is not None and output not in OUTPUT_FORMATS:
            raise ConfigError("output", output, f"None, {', '.join(map(repr, OUTPUT_FORMATS))}")
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
        self.group_rows, self.output = group_rows, output
        self.multiplier_rows = layout.lanes if multiplier_rows is None else multiplier_rows
        self.arith = Arithmetic(cfg, max_cols)
        members = {
            "x": In(stream.Signature(activation_layout(layout.geometry))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(self.acc_bits) if output is None else unsigned(OUTPUT_FORMATS[output].width),
                "row": unsigned(self.row_bits)}))),
            "rows": In(range(max_rows + 1)),
            "busy": Out(1),
        }
        if output is not None:
            members["exp"] = In(signed(10))
        if not self.rom:
            members["wmem"] = Out(write_port_signature(unsigned(layout.weight_width), self.weight_depth))
            members["smem"] = Out(write_port_signature(unsigned(layout.scale_width), self.scale_depth))
            members["cbw"] = Out(codebook_write_signature(cfg))
        super().__init__(members)

    @property
    def acc_bits(self):
        return self.arith.acc_bits

    @property
    def row_bits(self):
        return max(1, (self.max_rows - 1).bit_length())

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

    @property
    def latency(self):
        """Clock edges from issuing a row group's last beat to its results entering the drain:
        activation buffer read (2), decode (2), the copy tree to the row groups (2), rows, scaling."""
        return self._input_delay + RowPair.latency_for(self.layout.scalars_per_beat) + \
            ScaleAccumulate.latency

    # The row datapath sees a beat this many edges after it is issued.
    _input_delay = ActivationLoader.read_latency + ActivationDecode.latency + 2   # + the copy tree

    def elaborate(self, platform):
        m = Module()
        lay = self.layout
        m.submodules.loader = loader = ActivationLoader(lay, self.xbuf_depth)
        m.submodules.issuer = issuer = Issuer(lay, max_rows=self.max_rows, xbuf_depth=self.xbuf_depth,
                                              weight_depth=self.weight_depth, scale_depth=self.scale_depth)
        m.submodules.decode = dec = ActivationDecode(lay, codebooks=self.codebooks, rom=self.rom)
        m.submodules.drain = drain = ResultDrain(lay.lanes, self.acc_bits, self.max_rows)
        wiring.connect(m, wiring.flipped(self.x), loader.x)
        if self.output is None:
            wiring.connect(m, drain.o, wiring.flipped(self.o))
        else:
            # On-chip float results: the row number rides beside each value as the tag.
            m.submodules.to_float = conv = OutputFloat(self.acc_bits, fmt=self.output, tag_bits=self.row_bits)
            m.d.comb += [conv.i.valid.eq(drain.o.valid), drain.o.ready.eq(conv.i.ready),
                         conv.i.p.value.eq(drain.o.p.value), conv.i.p.tag.eq(drain.o.p.row), conv.exp.eq(self.exp),
                         self.o.valid.eq(conv.o.valid), conv.o.ready.eq(self.o.ready),
                         self.o.p.value.eq(conv.o.p.value), self.o.p.row.eq(conv.o.p.tag)]
        if not self.rom:
            wiring.connect(m, wiring.flipped(self.cbw), dec.cbw)
        iss = issuer.o.payload
        m.d.comb += [issuer.start.eq(loader.start), issuer.n_beats.eq(loader.n_beats), issuer.rows.eq(self.rows),
                     issuer.release.eq(drain.release), loader.done.eq(drain.done), drain.rows.eq(self.rows),
                     loader.raddr.eq(iss.xaddr), dec.beat.eq(loader.rdata), self.busy.eq(loader.busy)]
        psum, tags = self._rows(m, dec, issuer)
        self._scale(m, psum, tags, loader, drain)
        return m

    # Weight and scale memories: the block RAM's own (synchronous) read register. A fabric
    # register after it would buy ~5 ns on the 85F, but yowasp Yosys 0.70 once mapped one bit of
    # the 1664-bit weight word onto two conflicting flip-flops (nextpnr: "multiply driven"), and
    # tried again, its 1.6k flip-flops pinned next to the DP16KDs made nextpnr's placement
    # legalisation several times slower. The multiplier rows register the data in their
    # MULT18X18D inputs anyway.
    _mem_latency = 1

    def _memory(self, m, name, width, depth, init, port, addr):
        """A weight or scale memory: write port ``port`` (None: a ROM), its read data
        ``_mem_latency`` edges after ``addr``."""
        m.submodules[name] = mem = memory.Memory(shape=unsigned(width), depth=depth, init=init,
                                                 attrs={"no_rw_check": 1})
        if port is not None:
            wp = mem.write_port()
            en, waddr, wdata = registered_write(m, port, name)
            m.d.comb += [wp.en.eq(en), wp.addr.eq(waddr), wp.data.eq(wdata)]
        rp = mem.read_port()
        m.d.comb += rp.addr.eq(addr)
        return rp.data

    def _rows(self, m, dec, issuer):
        """The rows (pairs sharing multipliers, in groups of ``group_rows`` with their own copy of
        the activation codewords); returns every row's array sum and the beat tags delayed to it."""
        lay, cfg, R = self.layout, self.layout.config, self.layout.lanes
        iss, valid = issuer.o.payload, issuer.o.valid
        d_in = self._input_delay
        # The weight word is read so that its registered data meets the decoded activation.
        w_q = self._memory(m, "wmem", lay.weight_width, self.weight_depth,
                           self.image.weight_words if self.image is not None else [],
                           None if self.rom else self.wmem, delay(m, iss.waddr, d_in - self._mem_latency, "waddr"))
        wv = data.View(lay.weight_word, w_q)
        psum = []
        row_lat = None
        groups = range(0, R, self.group_rows)
        n = len(groups)
        x_sum_delay = d_in + RowPair.xsum_lag_for(lay.scalars_per_beat) - (ActivationLoader.read_latency + dec.sum_latency)
        # Every signal that reaches all rows goes through a copy tree: one flip-flop per row group.
        x_copies = _per_group(m, dec.words, "x_g", n)
        s_copies = _per_group(m, delay(m, dec.x_sum, x_sum_delay - 2, "x_sum"), "x_sum_g", n)
        f_copies = _per_group(m, delay(m, iss.first, d_in - 2, "first"), "first_g", n)
        v_copies = _per_group(m, delay(m, valid, d_in - 2, "beat_valid"), "beat_valid_g", n)
        for g, x_g, x_sum, first, beat_valid in zip(groups, x_copies, s_copies, f_copies, v_copies):
            for r in range(g, min(g + self.group_rows, R), 2):
                pair = RowPair(cfg, lay.scalars_per_beat, rows=min(2, R - r), fabric=r >= self.multiplier_rows)
                m.submodules[f"rows{r}"] = pair
                m.d.comb += [pair.x.eq(x_g), pair.valid.eq(beat_valid), pair.first.eq(first), pair.x_sum.eq(x_sum)]
                m.d.comb += [pair.w[k].eq(wv[r + k].cw) for k in range(pair.rows)]
                psum += [pair.psum[k] for k in range(pair.rows)]
                row_lat = pair.latency
        lag = d_in + row_lat
        tags = {"valid": delay(m, valid & iss.alast, lag - 2, "arr_valid"), "last": delay(m, iss.vlast, lag - 2, "vec_last"),
                "saddr": delay(m, iss.saddr, lag - self._mem_latency - 1, "saddr"), "lag": lag}
        return psum, tags

    def _scale(self, m, psum, tags, loader, drain):
        """Scale and accumulate each row's array sums; the group's results go to the drain."""
        lay = self.layout
        s_q = self._memory(m, "smem", lay.scale_width, self.scale_depth,
                           self.image.scale_words if self.image is not None else [],
                           None if self.rom else self.smem, tags["saddr"])
        # The scale codes read one edge early and registered in the fabric (a few bits per row):
        # the block RAM's slow clock-to-data (~5 ns) no longer feeds the rows' scale decode (the
        # deepest logic after a memory in a 256-MAC ULX3S build).
        s_r = Signal.like(s_q, name="smem_data_q")
        m.d.sync += s_r.eq(s_q)
        sv = data.View(lay.scale_word, s_r)
        x_scale = delay(m, loader.rdata.scale, tags["lag"] - ActivationLoader.read_latency - 2, "x_scale")
        # Per row group (copy trees, two edges): the tags and the activation's scale code.
        n = -(-len(psum) // self.group_rows)
        copies = [_per_group(m, v, f"{name}_g", n) for v, name in
                  ((tags["valid"], "arr_valid"), (tags["last"], "vec_last"), (x_scale, "x_scale"))]
        for r, p in enumerate(psum):
            valid, last, xs = (c[r // self.group_rows] for c in copies)
            m.submodules[f"scale{r}"] = sa = ScaleAccumulate(lay.config, self.max_cols)
            m.d.comb += [sa.valid.eq(valid), sa.psum.eq(p), sa.w_scale.eq(sv[r]), sa.x_scale.eq(xs),
                         sa.last.eq(last), drain.values[r].eq(sa.o_value)]
            if r == 0:
                m.d.comb += drain.valid.eq(sa.o_valid)
