"""MXFP4 dot-product unit: the baseline the BCQ unit's cost is compared against (same stream
interface style, same pipeline helpers, exact fixed-point result like the BCQ unit).
"""

import operator

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import mx_beat_layout
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import DEFAULT_MAX_LEN
from bcq.sw.formats.mxfp4 import DOUBLED, MXConfig

from .pipeline import Pipeline, tree_sum

__all__ = ["MXFP4Dot"]


class MXFP4Dot(wiring.Component):
    """``lanes`` MXFP4 element pairs per cycle: E2M1 decode, products, block sum, shift by the
    two shared exponents, per-vector accumulation; bit-exact to ``bcq.sw.formats.mxfp4.dot_fixed``.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.mxfp4.MXConfig`
        Block size and the hardware's exponent window.
    lanes : int
        Element pairs per beat; a divisor of the block size.
    max_len : int
        Longest vector; sets ``acc_bits``.

    Members
    -------
    i : ``In(stream.Signature(mx_beat_layout(lanes)))``
        A block of ``config.block`` elements spans ``block / lanes`` beats; its scales are taken
        from its last beat; ``last`` ends a vector on a block boundary.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        One accumulator per vector, value ``o * 2**(2 * exp_min - 2)``.

    Latency ``latency`` (= 5); one beat per cycle.
    """

    latency = 5

    def __init__(self, config: MXConfig = MXConfig(), *, lanes=8, max_len=DEFAULT_MAX_LEN):
        lanes = operator.index(lanes)
        if lanes < 1 or config.block % lanes:
            raise ConfigError("lanes", lanes, f"a divisor of the block size {config.block}")
        self.config, self.lanes, self.max_len = config, lanes, max_len
        super().__init__({"i": In(stream.Signature(mx_beat_layout(lanes))),
                          "o": Out(stream.Signature(signed(self.acc_bits)))})

    @property
    def macs_per_cycle(self):
        return self.lanes

    @property
    def beats_per_block(self):
        return self.config.block // self.lanes

    @property
    def acc_bits(self):
        return self.config.max_acc(self.max_len).bit_length() + 1

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        pipe = Pipeline(m, self.i, self.o)
        reg, en = pipe.reg, pipe.en
        p = self.i.payload

        def element(code, name):
            mag = Signal(unsigned(4), name=f"{name}_mag")
            with m.Switch(code[:3]):
                for k, v in enumerate(DOUBLED):
                    with m.Case(k):
                        m.d.comb += mag.eq(v)
            val = Signal(signed(5), name=name)
            m.d.comb += val.eq(Mux(code[3], -mag, mag))
            return val

        beat = Signal(range(self.beats_per_block))
        end = Signal()
        take = Signal()
        m.d.comb += [take.eq(self.i.valid & en), end.eq((beat == self.beats_per_block - 1) | p.last)]
        with m.If(take):
            m.d.sync += beat.eq(Mux(end, 0, beat + 1))

        # Stage 1: decode and multiply (|m_w m_x| <= 144).
        prods = [reg(f"s1_p{j}", signed(9), element(p.w[j], f"w{j}") * element(p.x[j], f"x{j}"))
                 for j in range(self.lanes)]
        side = [reg(f"s1_{n}", s, v) for n, s, v in (("valid", 1, self.i.valid), ("end", 1, end),
                                                   ("last", 1, p.last), ("wsc", 8, p.w_scale), ("xsc", 8, p.x_scale))]
        # Stage 2: beat sum.
        bsum = reg("s2_sum", signed(9 + (self.lanes - 1).bit_length()), tree_sum(prods))
        v2, e2, l2, w2, x2 = [reg(f"s2_{n}", s.shape(), s) for n, s in zip(("valid", "end", "last", "wsc", "xsc"), side)]
        # Stage 3: block sum; shift = e_w + e_x - 2 exp_min.
        block_bits = 9 + (cfg.block - 1).bit_length() + 1
        blk = Signal(signed(block_bits))
        total = Signal(signed(block_bits))
        m.d.comb += total.eq(blk + bsum)
        with m.If(en & v2):
            m.d.sync += blk.eq(Mux(e2, 0, total))
        s3 = reg("s3_block", signed(block_bits), total)
        sh = reg("s3_shift", unsigned(cfg.shift_max.bit_length()), w2 + x2 - (2 * (127 + cfg.exp_min)))
        v3, l3 = reg("s3_valid", 1, v2 & e2), reg("s3_last", 1, l2)
        # Stage 4: shift.
        term = reg("s4_term", signed(block_bits + cfg.shift_max), s3 << sh)
        v4, l4 = reg("s4_valid", 1, v3), reg("s4_last", 1, l3)
        # Stage 5: accumulate and emit on `last`.
        pipe.accumulate(term, v4, l4, self.acc_bits)
        return m
