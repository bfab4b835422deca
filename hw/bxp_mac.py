"""Precision-reconfigurable block-wise MAC (Ax-BxP), run-time mode per beat.

What each mode computes is defined in ``bcq.sw.formats.axbxp`` (the golden model, unchanged). This unit
maps every mode onto one fixed array of K^2 k x k block multipliers ("bricks"):

- Each operand is split once into sign and magnitude (|v| on a carry chain) and offers a few
  *window digits* W_u = digit (H - u) of |v| with exponent e_u = H - u, where H = max(lead, c):
  lead = the leading non-zero digit (found once per operand), c = D - 1 for a dynamic mode
  with several products per cycle, c = p/k - 1 otherwise (exact, static, and a dynamic mode
  that has the whole array for its one product; on operands in the mode's range H = c there).
  Dynamic D thus truncates the magnitude *before* the fixed multiplier array: its D kept
  digits are W_0..W_{D-1}; a one-product dynamic mode clears the digits below lead - D + 1
  and runs on exact wiring.
- A brick multiplies one x window digit by one w window digit, places the 2k-bit product on
  digit e_x + e_w with one-hot selects (one shifter that every mode shares) and complements it
  when the product is negative; the +1s of those ones' complements enter the adder tree as
  carry-ins. One adder tree (carry chains), one accumulator.
- ``bxp_plan`` places every block product of every mode on a brick so that bricks see few
  distinct (lane, window digit) sources; a source is a registered-flag AND-OR mux input.

Default config (N = 8, k = 2: 16 bricks), products per cycle and what a brick sees:
exact8 / dynamic3 (1): digit pairs (i, j) of lane 0, dynamic3 on truncated magnitudes;
static6 / static3 / static1 (2 / 5 / 16): the kept top-diagonal pairs of each lane;
exact4 / dynamic2 (4): digits (H - u, H - v), u, v in {0, 1}, H = 1 / max(lead, 1), 4 bricks
a lane; exact2 / dynamic1 (16): one brick a lane, H = 0 / lead (static1: H = 3).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import bxp_beat_layout
from bcq.sw.formats.axbxp import DEFAULT_BXP, BxPConfig
from bcq.sw.formats.errors import ConfigError

from .bxp_plan import plan
from .pipeline import Pipeline

__all__ = ["BxPMac"]


def _any(values):
    values = list(values)
    out = values[0] if values else 0
    for v in values[1:]:
        out = out | v
    return out


class ModeSets:
    """``ModeSets(m, mode, reg)(S)``: a signal that is 1 when the mode index ``mode`` is in the
    set S (one shared signal per distinct set). ``registered(S)``: the same, one pipeline stage
    later.

    Parameters
    ----------
    m : Module
        Where the decode logic goes.
    mode : Signal
        The beat's (stage-1 registered) mode index.
    reg : callable
        The pipeline's ``reg(name, shape, value)`` (a stall-aware register).
    """

    def __init__(self, m, mode, reg):
        self.m, self.mode, self.reg, self.comb, self.regs = m, mode, reg, {}, {}

    def __call__(self, modes):
        key = frozenset(modes)
        if not key:
            return 0
        if key not in self.comb:
            s = Signal(name="in_" + "_".join(str(i) for i in sorted(key)))
            self.m.d.comb += s.eq(_any(self.mode == i for i in sorted(key)))
            self.comb[key] = s
        return self.comb[key]

    def registered(self, modes):
        key = frozenset(modes)
        if not key:
            return 0
        if key not in self.regs:
            self.regs[key] = self.reg("s2_in_" + "_".join(str(i) for i in sorted(key)), 1, self(key))
        return self.regs[key]


class OperandDigits:
    """Sign, magnitude and window digits of one N-bit operand (combinational).

    ``window(u, modes)``: W_u = digit (H - u) of |v| under the beat's mode if it is in
    ``modes`` (zero where a truncating mode clears it), H = max(lead, c) per mode;
    ``exponent(u, mode)``: H - u while ``mode`` (a data-dependent, "lead" mode) is the beat's
    mode, else 0.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    cfg : BxPConfig
        N, k and the modes.
    bp : ``bxp_plan.BrickPlan``
        The brick plan (each mode's top-digit rule and truncation).
    v : Value
        The N-bit operand field.
    is_signed : Value
        The beat's signedness.
    inset : :class:`ModeSets`
        Mode-set decoder of the beat's mode.
    name : str
        Prefix of the signals' names.

    Members
    -------
    neg : Signal
        The operand is negative (signed beats only).
    dig : list of Value
        The K k-bit digits of |v|.
    above : list of Value
        ``above[h]``: a digit at or above h is non-zero (``above[K]`` = 0).
    """

    def __init__(self, m, cfg, bp, v, is_signed, inset, name):
        n, k, K = cfg.n_bits, cfg.block_bits, cfg.n_blocks
        self.m, self.cfg, self.bp, self.inset, self.name = m, cfg, bp, inset, name
        self.neg = Signal(name=f"{name}_neg")
        mag = Signal(n, name=f"{name}_mag")
        m.d.comb += [self.neg.eq(is_signed & v[n - 1]), mag.eq(Mux(self.neg, -v, v))]
        self.dig = [mag[k * h:k * (h + 1)] for h in range(K)]
        nz = [d.any() for d in self.dig]
        self.above = [_any(nz[h:]) for h in range(K)] + [0]   # a digit at or above h is non-zero

    def _ge(self, h, modes):
        """H >= h, i.e. max(lead, c) >= h: the mode's c reaches h, or a digit at or above h is
        non-zero. (For a constant-H mode the second never holds for an operand in the mode's
        range: its magnitude fits c + 1 digits.)"""
        return self.inset([mi for mi in modes if self.bp.modes[mi].top[1] >= h]) | self.above[h]

    def window(self, u, modes):
        K = self.cfg.n_blocks
        w = self.dig[0] if u == 0 else 0
        for h in range(max(u, 1), K):                      # the highest h with H >= h wins
            w = Mux(self._ge(h, modes), self.dig[h - u], w)
        clear = []
        for mi in modes:
            d, c = self.bp.modes[mi].mask_d, self.bp.modes[mi].top[1]
            if d and c - u + d < K:                        # truncation form: H = c fixed
                clear.append(self.inset([mi]) & self.above[c - u + d])
        return Mux(_any(clear), 0, w) if clear else w

    def exponent(self, u, mode):
        e = 0
        for h in range(max(u, 1), self.cfg.n_blocks):
            e = Mux(self._ge(h, [mode]), h - u, e)
        return Mux(self.inset([mode]), e, 0)


def operand_stage(m, cfg, bp, reg, inset, x1, w1, sgn1):
    """Stage 2: every operand's window digits W_u (over the modes that read them), the
    exponents of data-dependent modes (zero in other modes) and each lane's product sign,
    registered. Returns {(lane, side, u): W}, {(lane, side, mode, u): e}, [lane sign]."""
    uses = {}
    for mi, tab in enumerate(bp.table):
        for entry in tab:
            if entry is not None:
                l, u, v = entry
                uses.setdefault((l, 0, u), set()).add(mi)
                uses.setdefault((l, 1, v), set()).add(mi)
    ops = {}
    for l in range(cfg.max_lanes):
        for side, v in ((0, x1[l]), (1, w1[l])):
            ops[l, side] = OperandDigits(m, cfg, bp, v, sgn1, inset, f"{'xw'[side]}{l}")
    W, E = {}, {}
    for (l, side, u), modes in sorted(uses.items()):
        W[l, side, u] = reg(f"s2_{'xw'[side]}{l}_W{u}", cfg.block_bits, ops[l, side].window(u, sorted(modes)))
        for mi in sorted(modes):
            if bp.modes[mi].top[0] == "lead":
                E[l, side, mi, u] = reg(f"s2_{'xw'[side]}{l}_e{u}_{bp.modes[mi].name}", range(cfg.n_blocks),
                                        ops[l, side].exponent(u, mi))
    negs = [reg(f"s2_neg{l}", 1, ops[l, 0].neg ^ ops[l, 1].neg) for l in range(cfg.max_lanes)]
    return W, E, negs


def brick_stage(m, cfg, bp, reg, inset, W, E, negs):
    """Stage 3: per brick, its operands from the registered windows (a source is enabled by
    the registered flag of the modes that route it here), their k x k product, both
    exponents (constant-H modes: c - u from the mode flags; lead modes: the lane's
    registered exponent, already zero in other modes) and the product's sign, registered."""
    K = cfg.n_blocks
    out = []
    for b in range(cfg.multipliers):
        ops = []
        for side in (0, 1):
            digit, const, lead = 0, {}, []
            for (l, u), modes in sorted(bp.sources(b, side).items()):
                digit = digit | Mux(inset.registered(modes), W[l, side, u], 0)
                for mi in modes:
                    rule, c = bp.modes[mi].top
                    if rule == "const":
                        for bit in range((K - 1).bit_length()):
                            if (c - u) >> bit & 1:
                                const.setdefault(bit, set()).add(mi)
                    else:
                        lead.append(E[l, side, mi, u])
            exp = _any(lead + [inset.registered(ms) << bit for bit, ms in sorted(const.items())])
            ops += [digit, exp]
        neg = _any(Mux(inset.registered(modes), negs[l], 0) for l, modes in sorted(bp.sign_sources(b).items()))
        out.append((reg(f"s3_b{b}_xd", cfg.block_bits, ops[0]), reg(f"s3_b{b}_wd", cfg.block_bits, ops[2]),
                    reg(f"s3_b{b}_ex", range(K), ops[1]), reg(f"s3_b{b}_ew", range(K), ops[3]),
                    reg(f"s3_b{b}_neg", 1, neg)))
    return out


def adder_tree(m, values, name, carries=()):
    """Sum of ``values`` plus the 1-bit ``carries`` as a balanced tree of two-input adders, one
    carry bit entering each adder as its carry-in. Intermediate sums are kept as wires, so
    Yosys maps every adder onto one carry chain (CCU2C) instead of merging the tree into one
    multi-operand adder of LUT full adders (16 x 17-bit terms: 143 CCU2C and no LUT4, against
    749 LUT4 + 11 CCU2C merged); ``a + b + c`` with a 1-bit ``c`` stays one chain."""
    values, carries, level = list(values), list(carries), 0
    while len(values) > 1 or carries:
        if len(values) == 1:
            values.append(carries.pop())
        nxt = []
        for i in range(0, len(values) - 1, 2):
            a, b = values[i], values[i + 1]
            width = max(len(a), len(b)) + 1
            s = Signal(signed(width) if a.shape().signed or b.shape().signed else unsigned(width),
                       name=f"{name}_l{level}_{i // 2}", attrs={"keep": 1})
            m.d.comb += s.eq(a + b + carries.pop() if carries else a + b)
            nxt.append(s)
        if len(values) % 2:
            nxt.append(values[-1])
        values, level = nxt, level + 1
    return values[0]


def slot_term(P, onehot, neg, k, width):
    """Ones' complement of ``P << k*s`` (s given one-hot) over ``width`` bits when ``neg``: the
    2k-bit product lands on digit s (low half) and s + 1 (high half)."""
    bits = []
    for d in range(len(onehot) + 1):
        for i in range(k):
            t = 0
            if d < len(onehot):
                t = t | (onehot[d] & P[i])
            if d >= 1:
                t = t | (onehot[d - 1] & P[k + i])
            bits.append(t ^ neg)
    bits += [neg] * (width - len(bits))
    return bits


def block_product(a, b):
    """Unsigned k x k product as an array of AND gates and gate-level full adders: LUT logic in
    both flows (written as ``a * b``, Yosys would spend a MULT18X18D on every brick in the DSP
    flow). Returns the 2k product bits."""
    k = len(a)
    row = [a[i] & b[0] for i in range(k)] + [0]           # running sum, k + 1 bits
    out = [row[0]]
    for j in range(1, k):
        pp, carry, nxt = [a[i] & b[j] for i in range(k)], 0, []
        for i in range(k):                                  # row[1:] + pp, ripple
            x, y = row[i + 1], pp[i]
            nxt.append(x ^ y ^ carry)
            carry = (x & y) | (carry & (x ^ y))
        row = nxt + [carry]
        out.append(row[0])
    return out + row[1:]


def position_stage(m, cfg, reg, s3):
    """Stage 4: each brick's k x k product and the one-hot digit position s = e_x + e_w of
    it (registered one-hot, so that placing it is one LUT level per bit)."""
    K, out = cfg.n_blocks, []
    for b, (xd, wd, ex, ew, neg) in enumerate(s3):
        s = ex + ew
        P = Signal(2 * cfg.block_bits, name=f"b{b}_P")
        m.d.comb += [P[i].eq(bit) for i, bit in enumerate(block_product(xd, wd))]
        out.append((reg(f"s4_b{b}_P", 2 * cfg.block_bits, P),
                    [reg(f"s4_b{b}_at{d}", 1, s == d) for d in range(2 * K - 1)],
                    reg(f"s4_b{b}_neg", 1, neg)))
    return out


def term_stage(m, cfg, reg, s4, width):
    """Stage 5: each product placed on its digit and complemented when negative, ``width``-bit
    terms; returns (terms, signs) -- a sign is the +1 that completes the negation."""
    terms, negs = [], []
    for b, (P, onehot, neg) in enumerate(s4):
        t = Signal(signed(width), name=f"b{b}_term")
        m.d.comb += [t[i].eq(bit) for i, bit in enumerate(slot_term(P, onehot, neg, cfg.block_bits, width))]
        terms.append(reg(f"s5_b{b}_term", signed(width), t))
        negs.append(reg(f"s5_b{b}_neg", 1, neg))
    return terms, negs


class BxPMac(wiring.Component):
    """Block-wise reconfigurable MAC on one fixed array of K^2 bricks.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.axbxp.BxPConfig`
        N, k and the modes (the golden model reads the same object).
    max_len : int
        Most beats in one vector; sets ``acc_bits`` so that no overflow is possible below it.
    tree_stages : int
        Pipeline stages of the adder tree over the K^2 terms: 1 (default; fewest LUTs) or 2
        (one more cycle of latency, about 1.5x the Fmax in the ECP5 flow).

    Members
    -------
    i : ``In(stream.Signature(bxp_beat_layout(config)))``
        Beats; ``mode`` and ``signed`` may change on any beat (no reset needed). Operands must
        lie in the mode's range (``BxPConfig.operand_range``, as the golden model checks); a
        mode index past the configured modes contributes 0.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        The sum of all products of a vector, after its ``last`` beat.

    Throughput: one beat per cycle; ``products_per_cycle(mode)`` = K^2 // L products per beat
    (L block products per product, ``BxPConfig.block_products``).
    Latency: ``latency`` = 6 + ``tree_stages`` cycles from the edge accepting ``last`` to
    ``o.valid``: operands in; sign, magnitude, window digits; brick operands; product and
    one-hot position; placed signed terms; adder tree; accumulate.
    Widths: ``term_bits`` = 2N + 1 per brick term, ``beat_bits`` per beat sum, ``acc_bits``.
    """

    latency = 7     # with the default tree_stages=1; instances carry their own

    def __init__(self, config: BxPConfig = DEFAULT_BXP, *, max_len=4096, tree_stages=1):
        if not isinstance(config, BxPConfig):
            raise ConfigError("config", type(config).__name__, "a BxPConfig")
        if not isinstance(max_len, int) or max_len < 1:
            raise ConfigError("max_len", max_len, "a positive integer (beats per vector)")
        if tree_stages not in (1, 2):
            raise ConfigError("tree_stages", tree_stages, "1 or 2")
        self.config, self.max_len, self.tree_stages = config, max_len, tree_stages
        self.latency = 6 + tree_stages
        self.plan = plan(config)
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
        return self.accumulator_bits(self.config, self.max_len)

    @staticmethod
    def accumulator_bits(config, max_len):
        """Accumulator width of a MAC of ``config`` summing up to ``max_len`` beats: no overflow."""
        return (max_len * config.max_lanes * config.max_product()).bit_length() + 1

    def elaborate(self, platform):
        m = Module()
        cfg, bp, n = self.config, self.plan, self.config.n_bits
        pipe = Pipeline(m, self.i, self.o)
        reg = pipe.reg

        # Stage 1: operands in.
        p = self.i.payload
        valid, last = reg("s1_valid", 1, self.i.valid), reg("s1_last", 1, p.last)
        mode1 = reg("s1_mode", p.mode.shape(), p.mode)
        sgn1 = reg("s1_signed", 1, p.signed)
        x1 = [reg(f"s1_x{l}", unsigned(n), p.x[l]) for l in range(cfg.max_lanes)]
        w1 = [reg(f"s1_w{l}", unsigned(n), p.w[l]) for l in range(cfg.max_lanes)]

        def step(stage):  # valid and last follow the data one stage per cycle
            return reg(f"{stage}_valid", 1, valid), reg(f"{stage}_last", 1, last)

        inset = ModeSets(m, mode1, reg)
        valid, last = step("s2")
        W, E, negs = operand_stage(m, cfg, bp, reg, inset, x1, w1, sgn1)
        valid, last = step("s3")
        s3 = brick_stage(m, cfg, bp, reg, inset, W, E, negs)
        valid, last = step("s4")
        s4 = position_stage(m, cfg, reg, s3)
        valid, last = step("s5")
        terms, negs = term_stage(m, cfg, reg, s4, self.term_bits)

        # Adder tree; the ones' complement +1s enter as carries. Then accumulate, emit on last.
        if self.tree_stages == 2:
            half = len(terms) // 2
            parts = [(terms[:half], negs[:half]), (terms[half:], negs[half:])]
            valid, last = step("s6a")
            terms = [reg(f"s6a_sum{j}", signed(self.beat_bits), adder_tree(m, t, f"tree{j}", c))
                     for j, (t, c) in enumerate(parts)]
            negs = []
        valid, last = step("s6")
        beat = reg("s6_sum", signed(self.beat_bits), adder_tree(m, terms, "tree", negs))
        pipe.accumulate(beat, valid, last, self.acc_bits)
        return m
