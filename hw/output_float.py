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

    # magnitude, leading one, exponent and shift, the shift's case and amounts, aligned quantum,
    # rounded result: one register each (in two stages, the 56-bit magnitude's 20-ns paths kept
    # the ULX3S board at 43.6 MHz; the shift's case decided in the stage of the shifts themselves
    # was 18 ns of logic before routing)
    latency = 6

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

        def stage(name, shape, value):
            r = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += r.eq(value)
            return r

        def controls(k, v, neg, tag):
            """valid, sign and tag, one stage on."""
            return (stage(f"v{k}", 1, v), stage(f"neg{k}", 1, neg),
                    stage(f"tag{k}", self.tag_bits, tag) if self.tag_bits else None)

        # Stage 1: sign and magnitude.
        mag1 = stage("mag1", w, abs(self.i.p.value))
        exp1 = stage("exp1", signed(self.exp_bits), self.exp)
        v1, neg1, tag1 = controls(1, self.i.valid, self.i.p.value < 0, self.i.p.tag if self.tag_bits else None)

        # Stage 2: position of the leading one.
        pos = Signal(range(w), name="lead")
        for k in range(w):
            with m.If(mag1[k]):
                m.d.comb += pos.eq(k)
        mag2, pos2 = stage("mag2", w, mag1), stage("pos2", range(w), pos)
        exp2 = stage("exp2", signed(self.exp_bits), exp1)
        v2, neg2, tag2 = controls(2, v1, neg1, tag1)

        # Stage 3: exponent and the shift to the quantum.
        ebits = self.exp_bits + 2
        e = Signal(signed(ebits + 1), name="e")                 # the value is in [2**e, 2**(e+1))
        e_eff = Signal(signed(ebits + 1), name="e_eff")
        m.d.comb += [e.eq(pos2 + exp2), e_eff.eq(Mux(e < f.emin, f.emin, e))]
        e3, e_eff3 = stage("e3", signed(ebits + 1), e), stage("e_eff3", signed(ebits + 1), e_eff)
        shift3 = stage("shift3", signed(ebits + 2), e_eff - f.man_bits - exp2)   # mag bits below the quantum
        mag3 = stage("mag3", w, mag2)
        v3, neg3, tag3 = controls(3, v2, neg2, tag2)

        # Stage 4: which way the magnitude moves to the quantum, and by how much.
        shift = shift3
        sh_bits = (w + 1).bit_length()
        lsh_bits = max(1, f.man_bits.bit_length())
        left4 = stage("left4", 1, shift <= 0)                        # shift left by -shift
        right4 = stage("right4", 1, (shift > 0) & (shift <= w + 1))  # shift right by shift
        # else: everything is below half the quantum: q = 0, no rounding up (sign kept: -0).
        lsh4 = stage("lsh4", lsh_bits, (-shift).as_unsigned()[:lsh_bits])
        sh4 = stage("sh4", sh_bits, shift.as_unsigned()[:sh_bits])
        s1_4 = stage("shift_half4", sh_bits, (shift - 1).as_unsigned()[:sh_bits])   # the half-quantum bit
        mag4 = stage("mag4", w, mag3)
        e4, e_eff4, zero4 = stage("e4", signed(ebits + 1), e3), stage("e_eff4", signed(ebits + 1), e_eff3), stage("zero4", 1, mag3 == 0)
        v4, neg4, tag4 = controls(4, v3, neg3, tag3)

        # Stage 5: the kept bits, the half-quantum bit and the bits below it.
        q = Signal(f.man_bits + 2, name="q")
        half = Signal(name="half_bit")
        rest = Signal(name="below_half")
        with m.If(left4):
            m.d.comb += q.eq(mag4 << lsh4)
        with m.Elif(right4):
            m.d.comb += [q.eq(mag4 >> sh4), half.eq((mag4 >> s1_4)[0]),
                         rest.eq((mag4 & ~(Const((1 << w) - 1, w) << s1_4)[:w]) != 0)]
        q5, half5, rest5 = stage("q5", f.man_bits + 2, q), stage("half5", 1, half), stage("rest5", 1, rest)
        e5, e_eff5, zero5 = stage("e5", signed(ebits + 1), e4), stage("e_eff5", signed(ebits + 1), e_eff4), stage("zero5", 1, zero4)
        v5, neg5, tag5 = controls(5, v4, neg4, tag4)

        # Stage 6: round to nearest even, pack.
        rnd = half5 & (rest5 | q5[0])
        big = Signal(name="overflow")
        bits = Signal(f.exp_bits + f.man_bits + 2, name="bits")
        m.d.comb += [bits.eq(((e_eff5 + f.bias - 1) << f.man_bits).as_unsigned() + q5 + rnd),
                     big.eq((e5 > f.emax) | (bits >= f.inf))]
        out = Mux(big, f.inf, bits[:f.exp_bits + f.man_bits])
        result = self.o.p.value if self.tag_bits else self.o.payload
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v5), result.eq(Mux(zero5, 0, Cat(out, neg5)))]
            if self.tag_bits:
                m.d.sync += self.o.p.tag.eq(tag5)
        return m
