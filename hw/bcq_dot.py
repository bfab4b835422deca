"""W4A4 LO-BCQ dot-product unit.

Computes, for each vector, the exact fixed-point dot product defined in docs/arithmetic.md
(and by the golden model, ``bcq.sw.formats.golden.dot_fixed``), from two LO-BCQ-encoded operand streams.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import bcq_beat_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import DEFAULT, BCQConfig
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import DEFAULT_MAX_LEN, Arithmetic

from .bcq_block import BlockDatapath, CodewordDecode, pair_table_write_signature, products_latency
from .chains import MODES, Term, chain_acc, chain_add, pipelined_tree, tree_levels
from .pipeline import Pipeline
from .scale import decode_scale

__all__ = ["BCQDot", "SCALE_MULTIPLIERS"]


SCALE_MULTIPLIERS = ("dsp", "chain")


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
    scale_multiplier : str
        Where the array sum is multiplied by the scale mantissas: ``"chain"`` (the default:
        AND-gated carry chains, no DSP, so the unit costs the same on every target; built as a
        ``*``, ``synth_ecp5 -nodsp`` would make it from ~1400 LUT4) or ``"dsp"`` (a ``*`` that
        Yosys maps onto one MULT18X18D: fewer cells where a DSP is free). Both are exact.
    cells : str
        How the carry chains are built: ``"ccu2c"`` (ECP5 ``CCU2C`` instances; what synthesis,
        ``bcq verilog`` and Verilator/Icarus get, the latter with ``sim/ecp5_cells.v``),
        ``"model"`` (an Amaranth model of the same cells with the same INIT values, for the
        Amaranth simulator and the proofs) or ``"rtl"`` (plain ``&``/``+``).

    Members
    -------
    i : ``In(stream.Signature(bcq_beat_layout(geometry)))``
        Beats in the order of docs/arithmetic.md section 3. ``last`` ends a vector, normally on
        the last beat of a block array (earlier, it ends a short final array: section 5, which
        also defines every scale code). Scales are taken from an array's last beat.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        One exact accumulator per vector; value ``o.payload * 2**out_exp * ts_w * ts_x``.
        Back-pressure stalls the whole pipeline: no result is lost or duplicated.
    cbw : ``Out(pair_table_write_signature(config))`` (absent with ``codebook_rom``)
        Writes one word of the pair table per cycle (``bcq.sw.contract.tables``: each word holds
        three codewords, so that one block RAM port decodes two scalars;
        ``pair_table_words(codebooks)`` makes all Nc x 128 of them, in address order). Write
        while no vector is in flight (a table port is shared by the write and a lookup).

    Trace taps: :meth:`trace_taps` (docs/arithmetic.md section 6, ``bcq trace``).

    Throughput: one beat per cycle (II = 1) while ``o`` is not back-pressured.
    Latency: ``latency`` enabled cycles from the clock edge that accepts a vector's ``last``
    beat to ``o.valid`` (16 for the default config with ``"chain"``, 13 with ``"dsp"``): codebook read, codeword
    register, product chains (``BlockDatapath.latency``), array sum with the scale decode and
    mantissa product, fine shift, scale multiply (1 register, or the chain tree's levels),
    coarse shifts, shift-accumulate.
    """

    def __init__(self, config: BCQConfig = DEFAULT, *, blocks_per_cycle=1, max_len=DEFAULT_MAX_LEN,
                 codebooks: Codebooks | None = None, codebook_rom=False, scale_multiplier="chain", cells="ccu2c"):
        self.geometry = BeatGeometry(config, blocks_per_cycle)
        if codebooks is not None and codebooks.config != config:
            raise ConfigError("codebooks", codebooks.config.describe(), f"codebooks for {config.describe()}")
        if codebook_rom and codebooks is None:
            raise ConfigError("codebook_rom", True, "only with codebooks given")
        if scale_multiplier not in SCALE_MULTIPLIERS:
            raise ConfigError("scale_multiplier", scale_multiplier, SCALE_MULTIPLIERS)
        if cells not in MODES:
            raise ConfigError("cells", cells, MODES)
        self.config = config
        self.blocks_per_cycle = self.geometry.blocks_per_cycle
        self.arith = Arithmetic(config, max_len)
        self.codebooks = codebooks
        self.codebook_rom = bool(codebook_rom)
        self.scale_multiplier, self.cells = scale_multiplier, cells
        self._plan = _ScalePlan(config, self.arith, scale_multiplier)
        self.datapath_latency = CodewordDecode.latency + products_latency(config, self.macs_per_cycle)
        # Datapath, array sum (+ scale decode), fine shift, multiply, coarse shifts, accumulate.
        self.latency = self.datapath_latency + 1 + 1 + self._plan.mult_latency + self._plan.coarse_stages + 1
        members = {
            "i": In(stream.Signature(bcq_beat_layout(self.geometry))),
            "o": Out(stream.Signature(signed(self.arith.acc_bits))),
        }
        if not self.codebook_rom:
            members["cbw"] = Out(pair_table_write_signature(config))
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
        cfg, ar, plan, cells = self.config, self.arith, self._plan, self.cells
        p = self.i.payload

        pipe = Pipeline(m, self.i, self.o)
        en, stage = pipe.en, pipe.reg
        take = Signal()
        m.d.comb += take.eq(self.i.valid & en)

        # Array boundaries come from a beat counter (or an early `last`).
        beat = Signal(range(self.beats_per_array))
        arr_first, arr_end = Signal(), Signal()
        m.d.comb += [arr_first.eq(beat == 0), arr_end.eq((beat == self.beats_per_array - 1) | p.last)]
        with m.If(take):
            m.d.sync += beat.eq(Mux(arr_end, 0, beat + 1))

        # Stages 1..D: decode, codeword register, product chains (the formally proven part).
        m.submodules.datapath = dp = BlockDatapath(
            self.geometry, codebooks=self.codebooks, codebook_rom=self.codebook_rom, cells=cells)
        assert dp.latency == self.datapath_latency
        m.d.comb += [dp.en.eq(en), dp.beat.eq(p)]
        if not self.codebook_rom:
            wiring.connect(m, wiring.flipped(self.cbw), dp.cbw)
        beat_sum = dp.beat_sum

        # Side band (valid, array start/end, last, scales) delayed to line up with beat_sum
        # (flip-flops with clock enable only).
        names = ("valid", "first", "end", "last", "w_scale", "x_scale")
        shapes = (1, 1, 1, 1, cfg.scale_bits, cfg.scale_bits)
        side = (self.i.valid, arr_first, arr_end, p.last, p.w_scale, p.x_scale)
        side_valid = [self.i.valid]   # side_valid[k]: a beat taken k enabled edges ago
        for k in range(self.datapath_latency):
            side = tuple(pipe.reg(f"s{k + 1}_{n}", shape, v) for n, shape, v in zip(names, shapes, side))
            side_valid.append(side[0])
        d_valid, d_first, d_end, d_last, d_wsc, d_xsc = side

        # Array sum P_a: beat_sum + (first ? 0 : acc) on one carry chain (the restart folded in).
        arr_acc = Signal(signed(ar.array_sum_bits), name="array_acc")
        total = chain_acc(m, "array_add", beat_sum, d_first, arr_acc, Const(0, ar.array_sum_bits),
                          ar.array_sum_bits, mode=cells)
        with m.If(en & d_valid):
            m.d.sync += arr_acc.eq(total)
        # ... and the scales of the array: decode, mantissa product (AND-gated chains), exponent sum.
        fmt = cfg.scale
        mw, ew = decode_scale(m, d_wsc, fmt, "w_scale")
        mx, ex = decode_scale(m, d_xsc, fmt, "x_scale")
        mant = plan.mantissa_product(m, mw, mx, cells)
        s_p = stage("s_array_sum", signed(ar.array_sum_bits), total)
        s_mant = stage("s_mant", unsigned(ar.mant_product_bits), mant)
        s_shift = stage("s_shift", unsigned(ar.exp_sum_bits), ew + ex)
        s_valid = stage("s_valid", 1, d_valid & d_end)
        s_last = stage("s_last", 1, d_last)

        # Fine shift folded into the multiplier operand: m' = m << (shift mod 8).
        f_m = stage("f_mant", unsigned(plan.mult_bits), s_mant << s_shift[:plan.fine_bits])
        f_q = stage("f_coarse", unsigned(plan.coarse_bits), s_shift[plan.fine_bits:]) if plan.coarse_bits else None
        f_p = stage("f_array_sum", signed(ar.array_sum_bits), s_p)
        f_valid, f_last = stage("f_valid", 1, s_valid), stage("f_last", 1, s_last)

        # V = P * m': one DSP, or a registered tree of AND-gated chains.
        if self.scale_multiplier == "dsp":
            v = stage("v_product", signed(plan.v_bits), f_p * f_m)
        else:
            lo, hi = -(1 << (ar.array_sum_bits - 1)), (1 << (ar.array_sum_bits - 1)) - 1
            terms = [Term(f_p, lo, hi, shift=b, gate=f_m[b]) for b in range(plan.mult_bits)]
            tot, regs, _ = pipelined_tree(m, "v_tree", terms, mode=cells, en=en)
            assert regs == plan.mult_latency
            v = Signal(signed(plan.v_bits), name="v_product")
            m.d.comb += v.eq(tot.value)
        q, vv, vl = f_q, f_valid, f_last
        for k in range(plan.mult_latency):
            q = stage(f"v_coarse{k}", unsigned(plan.coarse_bits), q) if plan.coarse_bits else None
            vv, vl = stage(f"v_valid{k}", 1, vv), stage(f"v_last{k}", 1, vl)

        # Coarse shift by 8 * q: all 2:1 stages but the last in LUTs, the last one folded into
        # the accumulator's chain (acc + (q_top ? V << top : V)).
        for k in range(plan.coarse_stages):
            v = stage(f"c_shift{k}", signed(len(v) + (plan.fine_span << k)), Mux(q[k], v << (plan.fine_span << k), v))
            q, vv, vl = stage(f"c_coarse{k}", unsigned(plan.coarse_bits), q), stage(f"c_valid{k}", 1, vv), stage(f"c_last{k}", 1, vl)
        acc = Signal(signed(ar.acc_bits), name="vec_acc")
        low = Signal(signed(ar.acc_bits), name="t_low")
        m.d.comb += low.eq(v)
        if plan.coarse_bits:
            top = plan.fine_span << plan.coarse_stages
            high = Signal(signed(ar.acc_bits), name="t_high")
            m.d.comb += high.eq(v << top)
            acc_next = chain_acc(m, "vec_add", acc, q[plan.coarse_stages], low, high, ar.acc_bits, mode=cells)
            term = Signal(signed(ar.acc_bits), name="scaled_sum")   # trace tap only
            m.d.comb += term.eq(Mux(q[plan.coarse_stages], high, low))
        else:
            acc_next = chain_acc(m, "vec_add", acc, Const(0, 1), low, low, ar.acc_bits, mode=cells)
            term = low
        with m.If(en):
            m.d.sync += self.o.valid.eq(vv & vl)
            with m.If(vv):
                # A vector's last array restarts the accumulator (a synchronous reset of the
                # flip-flops: no LUT).
                m.d.sync += [acc.eq(Mux(vl, 0, acc_next)), self.o.payload.eq(acc_next)]

        # Trace taps (trace_taps): only read by a simulator, so they cost no logic.
        self._taps = (dp, side_valid, en, {
            "array_sums": ((s_p,), s_valid & en), "scale_mants": ((s_mant,), s_valid & en),
            "scale_shifts": ((s_shift,), s_valid & en), "scaled_sums": ((term,), vv & en),
            "accumulator": ((acc_next,), vv & en), "output": ((self.o.payload,), self.o.valid & self.o.ready)})
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


class _ScalePlan:
    """Widths and stage counts of the scale path: ``T_a = P_a * m << s`` with ``m = mw * mx``
    and ``s = ew + ex`` (docs/arithmetic.md), computed as ``(P_a * (m << (s mod 8))) << 8 *
    (s div 8)``: the fine shift widens the multiplier operand by at most 7 bits (15 bits for
    E4M3: one 18x18 DSP still holds it), the coarse shift is a few 2:1 stages of 8, 16, ...
    bits, the last folded into the accumulator's chain."""

    fine_bits, fine_span = 3, 8

    def __init__(self, config, arith, multiplier):
        self.fmt, self.arith, self.multiplier = config.scale, arith, multiplier
        self.mult_bits = arith.mant_product_bits + self.fine_span - 1
        self.v_bits = arith.array_sum_bits + self.mult_bits
        self.coarse_bits = max(0, arith.exp_sum_bits - self.fine_bits)
        self.coarse_stages = max(0, self.coarse_bits - 1)
        self.mult_latency = 1 if multiplier == "dsp" else tree_levels(self.mult_bits)

    def mantissa_product(self, m, mw, mx, cells):
        """``mw * mx`` (unsigned) on AND-gated carry chains (no DSP, no LUT4); 1 for E8M0."""
        mb = self.fmt.mant_bits
        if not mb:
            return Const(1, 1)
        terms = [Term(mx, 0, self.fmt.mant_max, shift=b, gate=mw[b]) for b in range(mb)]
        level = 0
        while len(terms) > 1:
            nxt = [chain_add(m, f"mant_l{level}_{k // 2}", terms[k], terms[k + 1], mode=cells)
                   for k in range(0, len(terms) - 1, 2)]
            if len(terms) % 2:
                nxt.append(terms[-1])
            terms, level = nxt, level + 1
        t = terms[0]
        if t.gate is not None:   # one mantissa bit: the gate itself
            return Mux(t.gate, t.value, 0) << t.shift
        return t.value << t.shift
