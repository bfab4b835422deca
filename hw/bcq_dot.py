"""W4A4 LO-BCQ dot-product unit.

Computes, for each vector, the exact fixed-point dot product defined in docs/arithmetic.md
(and by the golden model, ``bcq.sw.formats.golden.dot_fixed``), from two LO-BCQ-encoded operand streams.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import bcq_beat_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import DEFAULT, BCQConfig
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import DEFAULT_MAX_LEN, Arithmetic

from .bcq_block import BlockDatapath, codebook_write_signature
from .pipeline import Pipeline
from .scale import decode_scale

__all__ = ["BCQDot"]


class BCQDot(wiring.Component):
    """LO-BCQ dot-product unit.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
        The format (the same object the golden model and the image writer read).
    blocks_per_cycle : int
        B, blocks of each operand consumed per beat: ``B * block_len`` MACs per cycle; a divisor
        of ``blocks_per_array`` (checked by :class:`bcq.sw.contract.geometry.BeatGeometry`).
    max_len : int
        Longest vector (scalars). Sets ``acc_bits`` so that no overflow is possible below it.
    codebooks : :class:`bcq.sw.formats.codebooks.Codebooks` or None
        Initial codebook contents (zeros if None).
    codebook_rom : bool
        Bake ``codebooks`` in as a ROM (no ``cbw`` port).
    external_x : bool
        Take the activation codewords from the ``x_words`` port instead of looking them up
        (an engine of several units shares one activation lookup); ``x_idx``/``x_sel`` of the
        beat are then unused.

    Members
    -------
    i : ``In(stream.Signature(bcq_beat_layout(geometry)))``
        Beats in the order of docs/arithmetic.md section 3. ``last`` ends a vector, normally on
        the last beat of a block array (earlier, it ends a short final array: section 5, which
        also defines every scale code). Scales are taken from an array's last beat.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        One exact accumulator per vector; value ``o.payload * 2**out_exp * ts_w * ts_x``.
        Back-pressure stalls the whole pipeline: no result is lost or duplicated.
    cbw : ``Out(codebook_write_signature(config))`` (absent with ``codebook_rom``)
        Writes one codebook entry per cycle. Write while no vector is in flight.
    x_words : ``In(data.ArrayLayout(signed(entry_bits), B * block_len))`` (with ``external_x``)
        The codewords of the beat accepted on the previous clock edge, read from memories
        enabled by ``i.ready`` (so they hold while the unit stalls).

    Trace taps: :meth:`trace_taps` (docs/arithmetic.md section 6, ``bcq trace``).

    Throughput: one beat per cycle (II = 1) while ``o`` is not back-pressured.
    Latency: ``latency`` (= 7) cycles from the clock edge that accepts a vector's ``last``
    beat to ``o.valid``: codebook read, codeword register, products, beat adder tree, array
    sum, scale multiply, shift-accumulate.
    """

    # Block datapath (4), then array sum + scale product, scaling, shift-accumulate.
    latency = BlockDatapath.latency + 3

    def __init__(self, config: BCQConfig = DEFAULT, *, blocks_per_cycle=1, max_len=DEFAULT_MAX_LEN,
                 codebooks: Codebooks | None = None, codebook_rom=False, external_x=False):
        self.geometry = BeatGeometry(config, blocks_per_cycle)
        if codebooks is not None and codebooks.config != config:
            raise ConfigError("codebooks", codebooks.config.describe(), f"codebooks for {config.describe()}")
        if codebook_rom and codebooks is None:
            raise ConfigError("codebook_rom", True, "only with codebooks given")
        self.config = config
        self.blocks_per_cycle = self.geometry.blocks_per_cycle
        self.arith = Arithmetic(config, max_len)
        self.codebooks = codebooks
        self.codebook_rom = bool(codebook_rom)
        self.external_x = bool(external_x)
        members = {
            "i": In(stream.Signature(bcq_beat_layout(self.geometry))),
            "o": Out(stream.Signature(signed(self.arith.acc_bits))),
        }
        if not self.codebook_rom:
            members["cbw"] = Out(codebook_write_signature(config))
        if self.external_x:
            members["x_words"] = In(data.ArrayLayout(signed(config.entry_bits), self.macs_per_cycle))
        super().__init__(members)

    # Figures that tests, docs and benches read --------------------------------------------
    @property
    def macs_per_cycle(self):
        return self.geometry.scalars_per_beat

    @property
    def beats_per_array(self):
        return self.geometry.beats_per_array

    @property
    def acc_bits(self):
        return self.arith.acc_bits

    @property
    def out_exp(self):
        return self.arith.out_exp

    def elaborate(self, platform):
        m = Module()
        cfg, ar = self.config, self.arith
        p = self.i.payload

        pipe = Pipeline(m, self.i, self.o)
        en, stage = pipe.en, pipe.reg
        take = Signal()
        m.d.comb += take.eq(self.i.valid & en)

        # Array boundaries come from a beat counter (or an early `last`).
        beat = Signal(range(self.beats_per_array))
        arr_end = Signal()
        m.d.comb += arr_end.eq((beat == self.beats_per_array - 1) | p.last)
        with m.If(take):
            m.d.sync += beat.eq(Mux(arr_end, 0, beat + 1))

        # Stages 1-4: decode, codeword register, products, beat sum (the formally proven part).
        m.submodules.datapath = dp = BlockDatapath(
            self.geometry, codebooks=self.codebooks,
            codebook_rom=self.codebook_rom, external_x=self.external_x)
        m.d.comb += [dp.en.eq(en), dp.beat.eq(p)]
        if not self.codebook_rom:
            wiring.connect(m, wiring.flipped(self.cbw), dp.cbw)
        if self.external_x:
            m.d.comb += dp.x_words.eq(self.x_words)
        beat_sum = dp.beat_sum

        # Side band (valid, array end, last, scales) delayed to line up with beat_sum.
        side = (self.i.valid, arr_end, p.last, p.w_scale, p.x_scale)
        side_valid = [self.i.valid]   # side_valid[k]: a beat taken k enabled edges ago
        for k in range(BlockDatapath.latency):
            side = tuple(pipe.reg(f"s{k + 1}_{n}", shape, v) for n, shape, v in
                         zip(("valid", "end", "last", "w_scale", "x_scale"), (1, 1, 1, cfg.scale_bits, cfg.scale_bits), side))
            side_valid.append(side[0])
        d_valid, d_end, d_last, d_wsc, d_xsc = side

        # Stage 5: array sum P_a; decode both scales, multiply mantissas, add exponents.
        arr_acc = Signal(signed(ar.array_sum_bits))
        total = Signal(signed(ar.array_sum_bits))
        m.d.comb += total.eq(arr_acc + beat_sum)
        with m.If(en & d_valid):
            m.d.sync += arr_acc.eq(Mux(d_end, 0, total))
        fmt = cfg.scale
        mw, ew = decode_scale(m, d_wsc, fmt, "w_scale")
        mx, ex = decode_scale(m, d_xsc, fmt, "x_scale")
        s4_p = stage("s4_array_sum", signed(ar.array_sum_bits), total)
        s4_mant = stage("s4_mant", unsigned(ar.mant_product_bits), mw * mx)
        s4_shift = stage("s4_shift", unsigned(ar.exp_sum_bits), ew + ex)
        s4_valid = stage("s4_valid", 1, d_valid & d_end)
        s4_last = stage("s4_last", 1, d_last)

        # Stage 6: scale the array sum by the mantissa product (E8M0: mantissas are 1).
        pm_shape = signed(ar.array_sum_bits + (ar.mant_product_bits if fmt.mant_bits else 0))
        s5_pm = stage("s5_scaled", pm_shape, s4_p * s4_mant if fmt.mant_bits else s4_p)
        s5_shift = stage("s5_shift", unsigned(ar.exp_sum_bits), s4_shift)
        s5_valid = stage("s5_valid", 1, s4_valid)
        s5_last = stage("s5_last", 1, s4_last)

        # Stage 7: exponent as a left shift, accumulate over arrays, emit on `last`.
        term = Signal(signed(ar.scaled_bits))
        m.d.comb += term.eq(s5_pm << s5_shift)
        acc_next = pipe.accumulate(term, s5_valid, s5_last, ar.acc_bits)

        # Trace taps (trace_taps): only read by a simulator, so they cost no logic.
        self._taps = (dp, side_valid, en, {
            "array_sums": ((s4_p,), s4_valid & en), "scale_mants": ((s4_mant,), s4_valid & en),
            "scale_shifts": ((s4_shift,), s4_valid & en), "scaled_sums": ((term,), s5_valid & en),
            "accumulator": ((acc_next,), s5_valid & en), "output": ((self.o.payload,), self.o.valid & self.o.ready)})
        return m

    def trace_taps(self):
        """The trace-taps protocol (docs/arithmetic.md section 6; read by ``bcq trace``), once the
        design is elaborated: stage name (``bcq.sw.formats.golden.TRACE_STAGES``) -> (values,
        valid). On every cycle where ``valid`` is high, ``values`` hold the stage's next values
        in stream order (per beat, per array or per vector), read as integers of their shapes."""
        if not hasattr(self, "_taps"):
            raise RuntimeError("BCQDot: trace taps exist once the design is elaborated")
        dp, side_valid, en, own = self._taps
        # A datapath value `delay` edges after its beat goes with that beat's delayed valid.
        taps = {name: (values, side_valid[delay] & en) for name, (values, delay) in dp.stage_taps().items()}
        return {**taps, **own}
