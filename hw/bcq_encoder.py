"""The on-chip activation encoder: BF16 lanes in, LO-BCQ activation beats out, bit-exact with the
integer encoder specification :mod:`bcq.sw.formats.encoder_int` (docs/arithmetic.md section 7)."""

import operator

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import activation_layout
from bcq.sw.contract.bf16_beats import float16_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.encoder_int import INPUT_FORMATS, TS_EXP_RANGE, EncoderArithmetic, scale_thresholds
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.numerics import scale_code_values

from .bcq_block import codebook_write_signature
from .pipeline import tree_sum

__all__ = ["BCQEncoder", "NearestEntry"]

BF16 = INPUT_FORMATS["bf16"]


def _signed(v):
    """``v`` (unsigned) as a signed value of one more bit: the same number."""
    return Cat(v, Const(0, 1)).as_signed()


def _argmin(m, keys, values, name):
    """Balanced tree over ``(key, value)`` pairs: the least key, the earlier pair on a tie.
    Returns ``(position, value)`` signals."""
    nodes = [(k, Const(i, range(len(keys))), v) for i, (k, v) in enumerate(zip(keys, values))]
    level = 0
    while len(nodes) > 1:
        nxt = []
        for j in range(0, len(nodes) - 1, 2):
            (ka, ia, va), (kb, ib, vb) = nodes[j], nodes[j + 1]
            # Named signals per node: nested expressions would be re-evaluated per use.
            tag = f"{name}_l{level}_{j // 2}"
            take_b = Signal(name=f"{tag}_b")
            k = Signal.like(ka, name=f"{tag}_key") if isinstance(ka, Signal) else Signal(ka.shape(), name=f"{tag}_key")
            i = Signal(range(len(keys)), name=f"{tag}_pos")
            v = Signal(va.shape(), name=f"{tag}_val")
            m.d.comb += [take_b.eq(kb < ka),         # strictly less: a tie keeps the earlier one
                         k.eq(Mux(take_b, kb, ka)), i.eq(Mux(take_b, ib, ia)), v.eq(Mux(take_b, vb, va))]
            nxt.append((k, i, v))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes, level = nxt, level + 1
    return nodes[0][1], nodes[0][2]


class NearestEntry(wiring.Component):
    """The nearest entry of one codebook to one scalar (combinational).

    Parameters
    ----------
    config : :class:`BCQConfig`

    Members
    -------
    t : ``In(signed(t_bits))``
        ``ceil(2 y)`` of the normalized scalar ``y`` (:attr:`EncoderArithmetic.t_bits`).
    entries : ``In(data.ArrayLayout(signed(entry_bits), 16))``
        The codebook, in index order (any order of values).
    index : ``Out(4)``
        The index of least ``|2t - 1 - 4 entry|``, the lowest such index on a tie: the float
        encoder's nearest entry of every ``y`` in ``((t-1)/2, t/2]`` (ties: the smaller value,
        then the lower index), docs/arithmetic.md section 7.
    value : ``Out(signed(entry_bits))``
        ``entries[index]``.
    """

    def __init__(self, config: BCQConfig):
        self.config = config
        self.arith = EncoderArithmetic(config)
        super().__init__({"t": In(signed(self.arith.t_bits)),
                          "entries": In(data.ArrayLayout(signed(config.entry_bits), config.n_entries)),
                          "index": Out(config.index_bits), "value": Out(signed(config.entry_bits))})

    def elaborate(self, platform):
        m = Module()
        keys = []
        for i in range(self.config.n_entries):
            k = Signal(unsigned(self.arith.key_bits), name=f"key{i}")
            # 2t - 1 - 4e is odd, so two different values never tie; equal values tie.
            m.d.comb += k.eq(abs(2 * self.t - 1 - 4 * self.entries[i]))
            keys.append(k)
        index, value = _argmin(m, keys, list(self.entries), "near")
        m.d.comb += [self.index.eq(index), self.value.eq(value)]
        return m


class BCQEncoder(wiring.Component):
    """LO-BCQ activation encoder: a stream of BF16 beats in, the engine's activation beats out.

    Parameters
    ----------
    config : :class:`BCQConfig`
        The format (array scale format and ``scale_rule``, Lb, LA, Nc, entry width).
    blocks_per_cycle : int
        B: blocks per beat (``BeatGeometry``), so ``B * block_len`` scalars per cycle.
    codebooks : :class:`Codebooks` or None
        Initial codebook contents (zeros if None); ``cbw`` rewrites them at run time.

    Members
    -------
    i : ``In(stream.Signature(float16_layout(geometry)))``
        BF16 patterns, ``B * block_len`` per beat, ``last`` on a vector's final beat. A vector is
        a multiple of ``array_len`` scalars; if ``last`` comes inside an array, that array is
        encoded as if padded with zeros (its maximum, and so every code, is the same).
    o : ``Out(stream.Signature(activation_layout(geometry)))``
        The encoded beats (indices, selectors, the array's scale code, ``last``), one per input
        beat, in order.
    ts_exp : ``In(signed(8))``
        The tensor scale is ``2**ts_exp``; hold it while a vector is in flight.
    cbw : ``Out(codebook_write_signature(config))``
        Codebook write port, the engine's signature: entry ``addr = selector * 16 + index``
        gets ``data``. Write while no vector is in flight.

    Throughput one beat per cycle (II = 1) without back-pressure. Latency: ``latency`` cycles
    from the clock edge that accepts an array's final beat to ``o.valid`` of its first beat
    (the array must be whole before its scale is known), with ``o.ready`` high; a FIFO of
    ``fifo_depth`` beats holds one array while the next arrives.
    """

    latency = 8
    # Cycles from accepting an array's final beat: scale register (1), scale code into its FIFO
    # (1), FIFO read-out (2), then the datapath: align, divide, nearest entries, block errors,
    # selector/output register (4 more, the output register included).

    def __init__(self, config: BCQConfig, *, blocks_per_cycle=1, codebooks: Codebooks | None = None):
        if not isinstance(config, BCQConfig):
            raise ConfigError("config", type(config).__name__, "a BCQConfig")
        if codebooks is not None and codebooks.config != config:
            raise ConfigError("codebooks", codebooks.config.describe(), f"codebooks for {config.describe()}")
        self.config = config
        self.geometry = BeatGeometry(config, blocks_per_cycle)
        self.arith = EncoderArithmetic(config)
        self.codebooks = codebooks
        super().__init__({"i": In(stream.Signature(float16_layout(self.geometry))),
                          "o": Out(stream.Signature(activation_layout(self.geometry))),
                          "ts_exp": In(signed(8)),
                          "cbw": Out(codebook_write_signature(config))})

    @property
    def lanes(self):
        """Scalars per cycle (``B * block_len``)."""
        return self.geometry.scalars_per_beat

    @property
    def fifo_depth(self):
        """Beats buffered: two arrays and the cycles the scale code takes."""
        return 2 * self.geometry.beats_per_array + 4

    # -- pieces ---------------------------------------------------------------------------------

    def _magnitude(self, m, bits, name):
        """The sign-cleared pattern with Inf -> the largest finite value and NaN -> 0."""
        f = BF16
        mag = Signal(15, name=name)
        special = bits[f.man_bits:15] == f.exp_all_ones
        nan = special & (bits[:f.man_bits] != 0)
        m.d.comb += mag.eq(Mux(nan, 0, Mux(special, f.mag_max_finite, bits[:15])))
        return mag

    def _split(self, mag):
        """``(m, e_field)``: the integer significand and the biased exponent field (value
        ``m * 2**(max(e_field, 1) - 1 + e_min)``)."""
        f = BF16
        e_field = mag[f.man_bits:15]
        m = Cat(mag[:f.man_bits], e_field != 0)
        return m, e_field

    def _scale_code(self, m, amag, ts_exp):
        """The scale code of an array of largest magnitude ``amag`` (comb), the threshold search
        of ``encoder_int.array_scale_codes`` on a fixed-point ``amax / 2**ts_exp``."""
        cfg, f = self.config, BF16
        th = scale_thresholds(cfg)
        unit_exp = th[0][1]                        # every threshold is num * 2**unit_exp
        nums = [n for n, _ in th]
        nb = max(nums).bit_length()
        ma, e_field = self._split(amag)
        # A = ma * 2**g in threshold units, g = e - ts_exp - unit_exp.
        g = Signal(signed(12), name="scale_g")
        m.d.comb += g.eq(_signed(e_field) + Mux(e_field == 0, 1, 0) - 1 + f.e_min - ts_exp - unit_exp)
        a_fix = Signal(nb + f.man_bits + 1, name="scale_afix")
        sticky = Signal(name="scale_sticky")
        over = Signal(name="scale_over")
        width = f.man_bits + 1
        m.d.comb += over.eq((g >= nb) & (ma != 0))
        with m.If(g >= 0):
            m.d.comb += a_fix.eq(ma << g.as_unsigned()[:max(1, nb.bit_length())])
        with m.Elif(g > -width):
            rs = Signal(range(width), name="scale_rshift")
            m.d.comb += [rs.eq(-g), a_fix.eq(ma >> rs), sticky.eq((ma & ~(Const((1 << width) - 1, width) << rs)[:width]) != 0)]
        with m.Else():
            m.d.comb += sticky.eq(ma != 0)
        bits = []
        for n in nums:
            if cfg.scale_rule == "ceil":
                bits.append(over | (n < a_fix) | ((a_fix == n) & sticky))
            else:
                bits.append(over | (n <= a_fix))
        first, _ = scale_code_values(cfg.scale)
        return tree_sum(bits) + first

    def _decode_scale(self, code):
        """``(mant, exp)`` of a scale code (as ``numerics.scale_decode``)."""
        fmt = self.config.scale
        if fmt.name == "e4m3":
            e, mm = code[3:7], code[:3]
            mant = Mux(e != 0, Cat(mm, Const(1, 1)), mm)
            exp = _signed(Mux(e != 0, e, 1)) - 10
            return mant, exp
        return Const(1, 1), _signed(code) - 127

    # -- the component ------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg, geo, ar, f = self.config, self.geometry, self.arith, BF16
        lanes, lb, nc = self.lanes, cfg.block_len, cfg.n_codebooks
        B = geo.blocks_per_cycle
        per_array = geo.beats_per_array

        # Codebook registers: every lane compares against every entry at once.
        init = self.codebooks.entries.flatten().tolist() if self.codebooks is not None else [0] * (nc * 16)
        cb = Array(Signal(signed(cfg.entry_bits), name=f"cb{a}", init=init[a]) for a in range(nc * 16))
        with m.If(self.cbw.en):
            m.d.sync += cb[self.cbw.addr].eq(self.cbw.data)

        # -- input side: buffer beats, track the array maximum, compute the scale code ---------
        beat_fifo = fifo.SyncFIFOBuffered(width=16 * lanes + 2, depth=self.fifo_depth)
        scale_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth + 2)
        m.submodules.beat_fifo, m.submodules.scale_fifo = beat_fifo, scale_fifo

        count = Signal(range(per_array), name="beat_in_array")
        run_max = Signal(15, name="run_max")
        end = Signal(name="array_end")
        mags = [self._magnitude(m, self.i.p.data[j], f"mag{j}") for j in range(lanes)]
        beat_max = mags[0]
        for mg in mags[1:]:
            beat_max = Mux(mg > beat_max, mg, beat_max)
        new_max = Signal(15, name="new_max")
        m.d.comb += [new_max.eq(Mux(beat_max > run_max, beat_max, run_max)),
                     end.eq((count == per_array - 1) | self.i.p.last),
                     self.i.ready.eq(beat_fifo.w_rdy),
                     beat_fifo.w_en.eq(self.i.valid),
                     beat_fifo.w_data.eq(Cat(self.i.p.data.as_value(), self.i.p.last, end))]
        done = Signal(name="array_done")
        amax = Signal(15, name="array_max")
        m.d.sync += done.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(end):
                m.d.sync += [count.eq(0), run_max.eq(0), amax.eq(new_max), done.eq(1)]
            with m.Else():
                m.d.sync += [count.eq(count + 1), run_max.eq(new_max)]
        code_in = Signal(8, name="scale_code_in")
        m.d.comb += [code_in.eq(self._scale_code(m, amax, self.ts_exp)),
                     scale_fifo.w_en.eq(done), scale_fifo.w_data.eq(code_in)]

        # -- datapath: a global-enable pipeline fed from the FIFO heads -----------------------
        en = Signal(name="advance")
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        head_ok = Signal(name="head_ok")
        m.d.comb += head_ok.eq(beat_fifo.r_rdy & scale_fifo.r_rdy)
        head_end = beat_fifo.r_data[16 * lanes + 1]
        m.d.comb += [beat_fifo.r_en.eq(en & head_ok), scale_fifo.r_en.eq(en & head_ok & head_end)]

        def reg(name, shape, value, init=0):
            r = Signal(shape, name=name, init=init)
            with m.If(en):
                m.d.sync += r.eq(value)
            return r

        # Stage 1: decode, align |x| / 2**(s_exp + ts_exp) to frac_bits fractional bits.
        code = scale_fifo.r_data
        s_mant, s_exp = self._decode_scale(code)
        v1 = reg("v1", 1, head_ok)
        last1 = reg("last1", 1, beat_fifo.r_data[16 * lanes])
        code1 = reg("code1", 8, code)
        mant1 = reg("mant1", 4, s_mant)
        sh_max = ar.y_bits + 4                      # m >= 1 shifted this far saturates Y
        n_bits = f.man_bits + 1 + sh_max
        neg1, num1, lost1, sat1 = [], [], [], []
        for j in range(lanes):
            bits = beat_fifo.r_data[16 * j:16 * (j + 1)]
            mx, e_field = self._split(self._magnitude(m, bits, f"mag_o{j}"))
            sh = Signal(signed(12), name=f"sh{j}")
            m.d.comb += sh.eq(_signed(e_field) + Mux(e_field == 0, 1, 0) - 1 + f.e_min - s_exp - self.ts_exp
                              + ar.frac_bits)
            num = Signal(n_bits, name=f"num{j}")
            lost = Signal(name=f"lost{j}")
            width = f.man_bits + 1
            with m.If(sh >= 0):
                m.d.comb += num.eq(mx << sh.as_unsigned()[:sh_max.bit_length()])
            with m.Elif(sh > -width):
                rs = Signal(range(width), name=f"rs{j}")
                m.d.comb += [rs.eq(-sh), num.eq(mx >> rs),
                             lost.eq((mx & ~(Const((1 << width) - 1, width) << rs)[:width]) != 0)]
            with m.Else():
                m.d.comb += lost.eq(mx != 0)
            neg1.append(reg(f"neg1_{j}", 1, bits[15]))
            num1.append(reg(f"num1_{j}", n_bits, num))
            lost1.append(reg(f"lost1_{j}", 1, lost))
            sat1.append(reg(f"sat1_{j}", 1, (sh > sh_max) & (mx != 0)))

        # Stage 2: Y = floor(num / mant) (restoring division, the remainder stays below mant).
        v2, last2, code2 = reg("v2", 1, v1), reg("last2", 1, last1), reg("code2", 8, code1)
        ys2, sticky2, neg2 = [], [], []
        for j in range(lanes):
            num = num1[j]
            y = Signal(ar.y_bits, name=f"y{j}")
            sticky = Signal(name=f"sticky{j}")
            if cfg.scale.mant_bits:
                sat = Signal(name=f"dsat{j}")
                m.d.comb += sat.eq(sat1[j] | (num[ar.y_bits:] >= mant1))
                r = num[ar.y_bits:]
                qbits = []
                for k in reversed(range(ar.y_bits)):
                    rr = Signal(5, name=f"div{j}_r{k}")      # 2r + next bit (r < mant <= 15)
                    ge = Signal(name=f"div{j}_q{k}")
                    m.d.comb += [rr.eq(Cat(num[k], r[:4])), ge.eq(rr >= mant1)]
                    qbits.append(ge)
                    r = Signal(4, name=f"div{j}_rem{k}")
                    m.d.comb += r.eq(Mux(ge, rr - mant1, rr))
                q = Cat(*reversed(qbits))
                zero = mant1 == 0
                m.d.comb += [y.eq(Mux(zero, 0, Mux(sat, ar.y_max, q))),
                             sticky.eq(~zero & (sat | lost1[j] | (r[:4] != 0)))]
            else:
                sat = Signal(name=f"dsat{j}")
                m.d.comb += sat.eq(sat1[j] | (num[ar.y_bits:] != 0))
                m.d.comb += [y.eq(Mux(sat, ar.y_max, num[:ar.y_bits])), sticky.eq(sat | lost1[j])]
            ys2.append(reg(f"y2_{j}", ar.y_bits, y))
            sticky2.append(reg(f"sticky2_{j}", 1, sticky))
            neg2.append(reg(f"neg2_{j}", 1, neg1[j]))

        # Stage 3: t = ceil(2y); per codebook the nearest entry of every lane.
        v3, last3, code3 = reg("v3", 1, v2), reg("last3", 1, last2), reg("code3", 8, code2)
        half = ar.frac_bits - 1
        idx3, val3, ysg3 = [], [], []
        for j in range(lanes):
            y = ys2[j]
            t = Signal(signed(ar.t_bits), name=f"t{j}")
            floor2 = y[half:]
            inexact = (y[:half] != 0) | sticky2[j]
            m.d.comb += t.eq(Mux(neg2[j], -floor2, floor2 + inexact))
            row_idx, row_val = [], []
            for c in range(nc):
                ne = NearestEntry(cfg)
                m.submodules[f"near_{j}_{c}"] = ne
                m.d.comb += [ne.t.eq(t)] + [ne.entries[i].eq(cb[c * 16 + i]) for i in range(16)]
                row_idx.append(reg(f"idx3_{j}_{c}", 4, ne.index))
                row_val.append(reg(f"q3_{j}_{c}", signed(cfg.entry_bits), ne.value))
            idx3.append(row_idx)
            val3.append(row_val)
            ysg3.append(reg(f"ys3_{j}", signed(ar.y_bits + 1), Mux(neg2[j], -y, y)))

        # Stage 4: per block and codebook, the squared error (exact integers).
        v4, last4, code4 = reg("v4", 1, v3), reg("last4", 1, last3), reg("code4", 8, code3)
        idx4 = [[reg(f"idx4_{j}_{c}", 4, idx3[j][c]) for c in range(nc)] for j in range(lanes)]
        err4 = []
        for b in range(B):
            row = []
            for c in range(nc):
                terms = []
                for j in range(b * lb, (b + 1) * lb):
                    d = Signal(signed(ar.diff_bits), name=f"d{j}_{c}")
                    m.d.comb += d.eq((val3[j][c] << ar.frac_bits) - ysg3[j])
                    terms.append(d * d)
                row.append(reg(f"err4_{b}_{c}", ar.err_bits, tree_sum(terms)))
            err4.append(row)

        # Stage 5: the selector of least error (the lower codebook on a tie); the output beat.
        with m.If(en):
            m.d.sync += self.o.valid.eq(v4)
            m.d.sync += [self.o.p.scale.eq(code4), self.o.p.last.eq(last4)]
            for b in range(B):
                sel, _ = _argmin(m, err4[b], [Const(c, range(nc)) for c in range(nc)], f"sel{b}")
                if cfg.selector_bits:
                    m.d.sync += self.o.p.sel[b].eq(sel)
                pick = Array(Array(idx4[j]) for j in range(b * lb, (b + 1) * lb))
                for jj, j in enumerate(range(b * lb, (b + 1) * lb)):
                    m.d.sync += self.o.p.idx[j].eq(pick[jj][sel] if nc > 1 else idx4[j][0])
        return m
