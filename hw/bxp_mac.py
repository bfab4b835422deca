"""Precision-reconfigurable block-wise MAC (Ax-BxP), run-time mode per beat.

What each mode computes is defined in ``bcq.sw.formats.axbxp`` (the golden model); this file builds it from
the same ``BxPConfig``: an array of K^2 block multipliers of k x k bits whose inputs, shifts and
signs are routed per mode, an adder tree, and an accumulator.
"""

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import bxp_beat_layout
from bcq.sw.formats.axbxp import DEFAULT_BXP, BxPConfig
from bcq.sw.formats.errors import ConfigError

from .pipeline import Pipeline, tree_sum

__all__ = ["BxPMac"]


def block_multiply(a, b):
    """k x k unsigned product as a sum of partial products: a block multiplier is a handful of
    LUTs, and writing it this way keeps synthesis from spending a DSP block on 2 x 2 bits."""
    return tree_sum([Mux(b[i], a << i, 0) for i in range(len(b))])


def _assignments(cfg: BxPConfig, mode):
    """Per block multiplier: None or (lane, x_block, w_block), where a block is ("fixed", i) or
    ("lead", t) = the t-th block below the operand's leading non-zero block."""
    kb = mode.blocks(cfg.block_bits)
    if mode.kind == "exact":
        per = [(("fixed", i), ("fixed", j)) for i in range(kb) for j in range(kb)]
    elif mode.kind == "static":
        per = [(("fixed", i), ("fixed", j)) for i, j in cfg.static_positions(mode)]
    else:
        per = [(("lead", t), ("lead", u)) for t in range(mode.keep) for u in range(mode.keep)]
    table = []
    for lane in range(cfg.products_per_cycle(mode)):
        table += [(lane, xb, wb) for xb, wb in per]
    return table + [None] * (cfg.multipliers - len(table))


class BxPMac(wiring.Component):
    """Block-wise reconfigurable MAC.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.axbxp.BxPConfig`
        N, k and the modes (the golden model reads the same object).
    max_len : int
        Most beats in one vector; sets ``acc_bits`` so that no overflow is possible below it.

    Members
    -------
    i : ``In(stream.Signature(bxp_beat_layout(config)))``
        Beats; ``mode`` and ``signed`` may change on any beat (no reset needed). A mode index
        past the configured modes contributes 0.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        The sum of all products of a vector, after its ``last`` beat.

    Throughput: one beat per cycle; ``products_per_cycle(mode)`` products per beat.
    Latency: ``latency`` (= 5) cycles from the edge accepting ``last`` to ``o.valid``:
    operand register, magnitudes and leading blocks, block products, adder tree, accumulate.
    """

    latency = 5

    def __init__(self, config: BxPConfig = DEFAULT_BXP, *, max_len=4096):
        if not isinstance(config, BxPConfig):
            raise ConfigError("config", type(config).__name__, "a BxPConfig")
        if not isinstance(max_len, int) or max_len < 1:
            raise ConfigError("max_len", max_len, "a positive integer (beats per vector)")
        self.config, self.max_len = config, max_len
        super().__init__({
            "i": In(stream.Signature(bxp_beat_layout(config))),
            "o": Out(stream.Signature(signed(self.acc_bits))),
        })

    def products_per_cycle(self, mode):
        mode = self.config.modes[self.config.mode_index(mode)] if isinstance(mode, str) else mode
        return self.config.products_per_cycle(mode)

    @property
    def term_bits(self):
        return 2 * self.config.n_bits + 1

    @property
    def beat_bits(self):
        return (self.config.max_lanes * self.config.max_product()).bit_length() + 1

    @property
    def acc_bits(self):
        return (self.max_len * self.config.max_lanes * self.config.max_product()).bit_length() + 1

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        n, k, K = cfg.n_bits, cfg.block_bits, cfg.n_blocks
        lanes = cfg.max_lanes

        pipe = Pipeline(m, self.i, self.o)
        reg = pipe.reg

        # Stage 1: operands in.
        p = self.i.payload
        s1_valid = reg("s1_valid", 1, self.i.valid)
        s1_last = reg("s1_last", 1, p.last)
        s1_mode = reg("s1_mode", p.mode.shape(), p.mode)
        s1_signed = reg("s1_signed", 1, p.signed)
        s1_x = [reg(f"s1_x{l}", unsigned(n), p.x[l]) for l in range(lanes)]
        s1_w = [reg(f"s1_w{l}", unsigned(n), p.w[l]) for l in range(lanes)]

        # Stage 2: sign-magnitude split and each magnitude's leading non-zero block.
        def split(v, name):
            neg = Signal(name=f"{name}_neg")
            mag = Signal(unsigned(n), name=f"{name}_mag")
            m.d.comb += [neg.eq(s1_signed & v[n - 1]), mag.eq(Mux(neg, -v, v))]
            lead = Signal(range(K), name=f"{name}_lead")
            for b in range(K):  # later blocks win: the most significant non-zero one
                with m.If(mag[k * b:k * (b + 1)] != 0):
                    m.d.comb += lead.eq(b)
            return neg, mag, lead

        s2_valid = reg("s2_valid", 1, s1_valid)
        s2_last = reg("s2_last", 1, s1_last)
        s2_mode = reg("s2_mode", s1_mode.shape(), s1_mode)
        ops = {}
        for l in range(lanes):
            xn, xm, xl = split(s1_x[l], f"x{l}")
            wn, wm, wl = split(s1_w[l], f"w{l}")
            ops[l] = dict(neg=reg(f"s2_neg{l}", 1, xn ^ wn),
                          x=reg(f"s2_xmag{l}", unsigned(n), xm), w=reg(f"s2_wmag{l}", unsigned(n), wm),
                          xl=reg(f"s2_xlead{l}", range(K), xl), wl=reg(f"s2_wlead{l}", range(K), wl))

        def block(mag, idx):
            blocks = Array(mag[k * b:k * (b + 1)] for b in range(K))
            return blocks[idx]

        # Stage 3: route blocks to the K^2 multipliers per mode, multiply, shift, sign.
        terms = []
        tables = [_assignments(cfg, mode) for mode in cfg.modes]
        for b in range(cfg.multipliers):
            xa = Signal(unsigned(k), name=f"mul{b}_x")
            wa = Signal(unsigned(k), name=f"mul{b}_w")
            sh = Signal(range(2 * k * (K - 1) + 1), name=f"mul{b}_shift")
            neg = Signal(name=f"mul{b}_neg")
            with m.Switch(s2_mode):
                for mi, table in enumerate(tables):
                    entry = table[b]
                    if entry is None:
                        continue  # falls to the Default below
                    lane, xb, wb = entry
                    o = ops[lane]
                    with m.Case(mi):
                        shift_parts = []
                        for sel, val, lead, tgt in ((xb, o["x"], o["xl"], xa), (wb, o["w"], o["wl"], wa)):
                            kind, t = sel
                            if kind == "fixed":
                                m.d.comb += tgt.eq(val[k * t:k * (t + 1)])
                                shift_parts.append(Const(t))
                            elif t == 0:  # the leading block itself
                                m.d.comb += tgt.eq(block(val, lead))
                                shift_parts.append(lead)
                            else:  # block `lead - t`; none below block 0
                                idx = (lead - t)[:len(lead)]
                                m.d.comb += tgt.eq(Mux(lead >= t, block(val, idx), 0))
                                shift_parts.append(Mux(lead >= t, idx, 0))
                        m.d.comb += [sh.eq(k * (shift_parts[0] + shift_parts[1])), neg.eq(o["neg"])]
                with m.Default():  # unused by this mode, or no such mode: contributes 0
                    m.d.comb += [xa.eq(0), wa.eq(0), sh.eq(0), neg.eq(0)]
            mag = Signal(unsigned(2 * n), name=f"mul{b}_mag")
            m.d.comb += mag.eq(block_multiply(xa, wa) << sh)
            terms.append(reg(f"s3_term{b}", signed(self.term_bits), Mux(neg, -mag, mag)))
        s3_valid = reg("s3_valid", 1, s2_valid)
        s3_last = reg("s3_last", 1, s2_last)

        # Stage 4: adder tree over the beat.
        s4_sum = reg("s4_sum", signed(self.beat_bits), tree_sum(terms))
        s4_valid = reg("s4_valid", 1, s3_valid)
        s4_last = reg("s4_last", 1, s3_last)

        # Stage 5: accumulate over the vector, emit on `last`.
        pipe.accumulate(s4_sum, s4_valid, s4_last, self.acc_bits)
        return m
