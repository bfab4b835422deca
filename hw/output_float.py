"""Output converter: the engine's exact row results to BF16 or FP32, bit-exact with
:func:`bcq.sw.formats.output_float.float_bits` (docs/arithmetic.md section 8)."""

import operator

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.output_float import OUTPUT_FORMATS

__all__ = ["OutputFloat"]


class OutputFloat(wiring.Component):
    """``value * 2**exp`` rounded to nearest even, once, to BF16 or FP32.

    Parameters
    ----------
    acc_bits : int
        Width of the signed accumulator (the engine's ``acc_bits``), 2..64.
    fmt : str
        ``"bf16"`` or ``"fp32"``.
    exp_bits : int
        Width of the signed ``exp`` input (default 10: exponents -512..511).
    tag_bits : int
        Width of a ``tag`` carried beside each result unchanged (0: none; the engine passes its
        row number).

    Members
    -------
    i : ``In(stream.Signature(data.StructLayout({"value": signed(acc_bits)[, "tag": tag_bits]})))``
        Row results.
    exp : ``In(signed(exp_bits))``
        The weight of the accumulator's LSB, ``2**exp`` (the golden model's ``out_exp`` plus the
        exponents of power-of-two tensor scales); hold it while results are in flight.
    o : ``Out(stream.Signature(unsigned(16 or 32)))``, with a tag
        ``Out(stream.Signature(data.StructLayout({"value": unsigned(16 or 32), "tag": tag_bits})))``
        The float's bits: overflow gives ``+-Inf``, results below the smallest normal are
        subnormal, a negative value that rounds to zero gives ``-0``, a zero accumulator ``+0``.

    One result per cycle; ``latency`` cycles from accepting ``i`` to ``o.valid`` (``o.ready`` high).
    """

    latency = 2     # leading-one search register, rounded result register

    def __init__(self, acc_bits, *, fmt="bf16", exp_bits=10, tag_bits=0):
        try:
            acc_bits = operator.index(acc_bits)
        except TypeError:
            acc_bits = None
        if acc_bits is None or not 2 <= acc_bits <= 64:
            raise ConfigError("acc_bits", acc_bits, "an integer 2..64")
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError("fmt", fmt, tuple(OUTPUT_FORMATS))
        if not isinstance(exp_bits, int) or not 2 <= exp_bits <= 16:
            raise ConfigError("exp_bits", exp_bits, "an integer 2..16")
        if isinstance(tag_bits, bool) or not isinstance(tag_bits, int) or tag_bits < 0:
            raise ConfigError("tag_bits", tag_bits, "an integer >= 0")
        self.acc_bits, self.fmt, self.exp_bits, self.tag_bits = acc_bits, OUTPUT_FORMATS[fmt], exp_bits, tag_bits
        tag = {"tag": unsigned(tag_bits)} if tag_bits else {}
        out = data.StructLayout({"value": unsigned(self.fmt.width), **tag}) if tag_bits else unsigned(self.fmt.width)
        super().__init__({"i": In(stream.Signature(data.StructLayout({"value": signed(acc_bits), **tag}))),
                          "exp": In(signed(exp_bits)),
                          "o": Out(stream.Signature(out))})

    def elaborate(self, platform):
        m = Module()
        f, w = self.fmt, self.acc_bits
        en = Signal(name="advance")
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        # Stage 1: sign, magnitude, position of the leading one.
        mag = Signal(w, name="mag")
        pos = Signal(range(w), name="lead")
        m.d.comb += mag.eq(abs(self.i.p.value))
        for k in range(w):
            with m.If(mag[k]):
                m.d.comb += pos.eq(k)
        v1, neg1, mag1, pos1 = Signal(name="v1"), Signal(name="neg1"), Signal(w, name="mag1"), Signal(range(w), name="pos1")
        exp1 = Signal(signed(self.exp_bits), name="exp1")
        with m.If(en):
            m.d.sync += [v1.eq(self.i.valid), neg1.eq(self.i.p.value < 0), mag1.eq(mag), pos1.eq(pos), exp1.eq(self.exp)]
        if self.tag_bits:
            tag1 = Signal(self.tag_bits, name="tag1")
            with m.If(en):
                m.d.sync += [tag1.eq(self.i.p.tag), self.o.p.tag.eq(tag1)]
        result = self.o.p.value if self.tag_bits else self.o.payload

        # Stage 2: quantum, shift, round to nearest even, pack.
        ebits = self.exp_bits + 2
        e = Signal(signed(ebits + 1), name="e")                 # the value is in [2**e, 2**(e+1))
        e_eff = Signal(signed(ebits + 1), name="e_eff")
        shift = Signal(signed(ebits + 2), name="shift")          # mag bits below the quantum
        m.d.comb += [e.eq(pos1 + exp1), e_eff.eq(Mux(e < f.emin, f.emin, e)),
                     shift.eq(e_eff - f.man_bits - exp1)]
        q = Signal(f.man_bits + 2, name="q")
        rnd = Signal(name="round_up")
        sh_bits = (w + 1).bit_length()
        with m.If(shift <= 0):
            m.d.comb += q.eq(mag1 << (-shift).as_unsigned()[:max(1, f.man_bits.bit_length())])
        with m.Elif(shift <= w + 1):
            s = shift.as_unsigned()[:sh_bits]
            kept = Signal(w, name="kept")
            half = Signal(name="half_bit")
            rest = Signal(name="below_half")
            s1 = Signal(sh_bits, name="shift_half")              # the half-quantum bit
            m.d.comb += [s1.eq(s - 1), kept.eq(mag1 >> s), half.eq((mag1 >> s1)[0]),
                         rest.eq((mag1 & ~(Const((1 << w) - 1, w) << s1)[:w]) != 0),
                         q.eq(kept), rnd.eq(half & (rest | kept[0]))]
        # else: everything is below half the quantum: q = 0, no rounding up (sign kept: -0).
        big = Signal(name="overflow")
        bits = Signal(f.exp_bits + f.man_bits + 2, name="bits")
        m.d.comb += [bits.eq(((e_eff + f.bias - 1) << f.man_bits).as_unsigned() + q + rnd),
                     big.eq((e > f.emax) | (bits >= f.inf))]
        out = Mux(big, f.inf, bits[:f.exp_bits + f.man_bits])
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v1), result.eq(Mux(mag1 == 0, 0, Cat(out, neg1)))]
        return m
