"""The matrix-vector engine's row datapath: codeword products of two rows in one multiplier,
registered adder trees, array sums, and the per-row scale and exact accumulation.

Every register here advances on every clock edge (no enable): the engine's issuer only sends a
beat when its results will have somewhere to go, so the datapath never stalls and no
enable net fans out to thousands of flip-flops. Values are tagged by the beats that produced
them; the tags travel beside the data in :class:`bcq.hw.gemv_parts` and the engine top.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.golden import Arithmetic

from .pipeline import registered_mult
from .scale import decode_scale

__all__ = ["RowPair", "ScaleAccumulate", "delay", "tree_levels", "pipelined_tree", "plane_products", "pack_pair",
           "can_pack"]


def delay(m, value, n, name):
    """``value`` ``n`` clock edges later (a chain of ``n`` registers)."""
    for k in range(n):
        r = Signal.like(value, name=f"{name}_d{k + 1}") if isinstance(value, Signal) else \
            Signal(value.shape(), name=f"{name}_d{k + 1}")
        m.d.sync += r.eq(value)
        value = r
    return value


def tree_levels(n):
    """Register levels of :func:`pipelined_tree` over ``n`` values (ceil(log2 n))."""
    return (n - 1).bit_length()


def pipelined_tree(m, name, values, width):
    """Balanced adder tree with a register after every level: the sum of ``values`` (signed,
    wrapping modulo ``2**width``, so ``width`` must hold the true sum), ``tree_levels(len(values))``
    clock edges later."""
    values, level = list(values), 0
    while len(values) > 1:
        nxt = []
        for i in range(0, len(values), 2):
            r = Signal(signed(width), name=f"{name}_l{level}_{i // 2}")
            m.d.sync += r.eq(values[i] + values[i + 1] if i + 1 < len(values) else values[i])
            nxt.append(r)
        values, level = nxt, level + 1
    return values[0]


def can_pack(config: BCQConfig):
    """Two products share one 18x18 multiplier when the packed operand (3 * entry_bits) fits."""
    return 3 * config.entry_bits <= 18


def pack_pair(w0, w1, e):
    """The packed operand ``w1 * 2**(2e) + (w0 + 2**(e-1))`` (signed, 3e bits): pure wiring, since
    ``w0 + 2**(e-1)`` is ``w0`` with its sign bit inverted (offset binary).

    With ``P = pack_pair(w0, w1, e) * x`` for signed e-bit ``x``, the low field
    ``L = P[0:2e]`` (signed) is ``(w0 + 2**(e-1)) * x`` exactly, and ``w1 * x = P[2e:4e]`` (signed)
    ``+ P[2e-1]``: the upper field borrows one from the lower when ``L < 0``. Checked for every
    operand triple by ``tests/test_engine_rows.py`` (and the gateware by its simulator tests)."""
    return Cat(w0[:e - 1], ~w0[e - 1], Const(0, e), w1).as_signed()


def plane_products(m, name, ws, x, e, width):
    """``sum_j w[j] * x[j]`` for each row ``w`` of ``ws`` (signed e-bit codewords) without
    multipliers, as a few partial sums per row (their sum is the beat sum) ``2 + tree_levels(S)``
    edges later, when the multiplier form's tree gives its sum: the codewords registered as they
    arrive (the weights come straight from a block RAM, as into a multiplier's input
    registers; the activations once for all rows), then per bit plane i the masked activations
    ``w[j] bit i ? x[j] : 0`` added in pairs into registers (the first tree level), the rest of a
    registered adder tree, and the planes weighted by ``2**i`` (the sign plane by ``-2**(e-1)``)
    added in pairs into registers."""
    S = len(x)
    xr = [Signal(signed(e), name=f"{name}_x{j}") for j in range(S)]
    m.d.sync += [xr[j].eq(x[j]) for j in range(S)]
    out = []
    for r, w in enumerate(ws):
        wr = [Signal(signed(e), name=f"{name}{r}_w{j}") for j in range(S)]
        m.d.sync += [wr[j].eq(w[j]) for j in range(S)]
        planes = []
        for i in range(e):
            first = []
            for j in range(0, S, 2):
                t = Signal(signed(e + 1), name=f"{name}{r}_m{i}_{j // 2}")
                m.d.sync += t.eq(sum(Mux(wr[k][i], xr[k], 0) for k in range(j, min(j + 2, S))))
                first.append(t)
            p = pipelined_tree(m, f"{name}{r}_p{i}", first, e + tree_levels(S))
            planes.append(-(p << i) if i == e - 1 else p << i)
        pairs = []
        for k in range(0, e, 2):
            c = Signal(signed(width), name=f"{name}{r}_c{k // 2}")
            m.d.sync += c.eq(planes[k] + planes[k + 1] if k + 1 < e else planes[k])
            pairs.append(c)
        out.append(pairs)
    return out


class RowPair(wiring.Component):
    """Array sums of one or two engine rows over a stream of beats.

    Two rows share each lane's activation codeword, so with ``can_pack(config)`` one multiplier
    per lane computes both rows' products (:func:`pack_pair`; on ECP5 one MULT18X18D per lane
    and row pair). Row 0's low fields carry ``+2**(e-1) * x``, removed once per beat with the
    shared ``x_sum``; row 1's borrows are counted by a tree of their own. Both are added in the
    stage after the trees, so they cost one adder per row, not per lane.

    With ``fabric``, no multiplier at all: each row's beat sum is taken bit plane by bit plane of
    its weight codewords, ``sum_i c_i * sum_j (w[j] bit i ? x[j] : 0)`` with ``c_i = 2**i`` and
    ``-2**(e-1)`` for the sign bit (:func:`plane_products`): AND gates and registered adder
    trees, placed anywhere in the fabric (the 85F has few multipliers and many LUTs); same
    latency as the multiplier form.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
    lanes : int
        S, codeword pairs per beat (``B * block_len``).
    rows : int
        1 or 2.
    fabric : bool
        Bit-plane adder trees instead of multipliers.

    Members
    -------
    x : ``In(data.ArrayLayout(signed(entry_bits), lanes))``
        The beat's activation codewords (shared by every row).
    w : ``In(data.ArrayLayout(data.ArrayLayout(signed(entry_bits), lanes), rows))``
        The beat's weight codewords of each row.
    valid : ``In(1)``
        ``x`` and ``w`` hold a beat (otherwise the array sums hold: the issuer may pause
        inside an array while it waits for a result bank).
    first : ``In(1)``
        The beat is the first of its block array.
    x_sum : ``In(signed(entry_bits + tree_levels(lanes)))``
        ``sum_j x[j]`` of the beat presented ``xsum_lag`` edges earlier.
    psum : ``Out(data.ArrayLayout(signed(array_sum_bits), rows))``
        Each row's running array sum; ``latency`` edges after an array's last beat was
        presented it is that array's sum ``P_a`` (docs/arithmetic.md).
    """

    def __init__(self, config: BCQConfig, lanes, rows=2, *, fabric=False):
        if rows not in (1, 2):
            raise ValueError(f"RowPair rows must be 1 or 2, not {rows!r}")
        self.config, self.lanes, self.rows, self.fabric = config, lanes, rows, bool(fabric)
        self.arith = Arithmetic(config)
        self.packed = rows == 2 and can_pack(config) and not self.fabric
        e = config.entry_bits
        words = data.ArrayLayout(signed(e), lanes)
        super().__init__({
            "x": In(words), "w": In(data.ArrayLayout(words, rows)), "valid": In(1), "first": In(1),
            "x_sum": In(signed(e + tree_levels(lanes))),
            "psum": Out(data.ArrayLayout(signed(self.arith.array_sum_bits), rows)),
        })

    @property
    def levels(self):
        return tree_levels(self.lanes)

    @property
    def xsum_lag(self):
        return self.xsum_lag_for(self.lanes)

    @property
    def latency(self):
        return self.latency_for(self.lanes)

    @staticmethod
    def xsum_lag_for(lanes):
        """Edges between a beat on ``x`` and its ``x_sum``: products (2) and tree levels."""
        return 2 + tree_levels(lanes)

    @staticmethod
    def latency_for(lanes):
        """Products (2), tree levels, correction stage (1), array accumulator (1)."""
        return 2 + tree_levels(lanes) + 2

    def elaborate(self, platform):
        m = Module()
        e, S = self.config.entry_bits, self.lanes
        beat_bits = self.arith.block_sum_bits(S)
        leaves = [[] for _ in range(self.rows)]
        borrows = []
        if self.fabric:
            # The beat register below adds the few partial sums.
            sums = [sum(p) for p in plane_products(m, "row", [self.w[r] for r in range(self.rows)], self.x, e, beat_bits)]
        for j in range(S if not self.fabric else 0):
            if self.packed:
                p = registered_mult(m, f"prod{j}", pack_pair(self.w[0][j], self.w[1][j], e), self.x[j], 3 * e, e, platform)
                leaves[0].append(p[:2 * e].as_signed())
                leaves[1].append(p[2 * e:4 * e].as_signed())
                borrows.append(p[2 * e - 1])
            else:
                for r in range(self.rows):
                    leaves[r].append(registered_mult(m, f"prod{r}_{j}", self.w[r][j], self.x[j], e, e, platform))
        if not self.fabric:
            sums = [pipelined_tree(m, f"row{r}", leaves[r], beat_bits) for r in range(self.rows)]
        fixes = [Const(0, 1)] * self.rows
        if self.packed:
            fixes[0] = -(self.x_sum << (e - 1))
            fixes[1] = pipelined_tree(m, "borrows", [b.as_unsigned() for b in borrows], self.levels + 2)
        first = delay(m, self.first, 2 + self.levels + 1, "first")
        valid = delay(m, self.valid, 2 + self.levels + 1, "valid")
        for r in range(self.rows):
            beat = Signal(signed(beat_bits), name=f"beat_sum{r}")
            m.d.sync += beat.eq(sums[r] + fixes[r])
            with m.If(valid):
                m.d.sync += self.psum[r].eq(Mux(first, 0, self.psum[r]) + beat)
        return m


class ScaleAccumulate(wiring.Component):
    """One row's scaling and exact accumulation over block arrays (docs/arithmetic.md):
    ``T_a = P_a * (mw * mx) << (ew + ex - 2 * exp_min)``, summed over the arrays of a vector.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
    max_len : int
        Longest vector; sets ``acc_bits``.

    Members
    -------
    valid : ``In(1)``
        ``psum`` holds an array sum this cycle.
    psum : ``In(signed(array_sum_bits))``
    w_scale, x_scale : ``In(unsigned(scale_bits))``
        The array's scale codes (same cycle as ``psum``).
    last : ``In(1)``
        The array is its vector's last.
    o_valid : ``Out(1)``
        High ``latency`` edges after a ``valid & last`` cycle.
    o_value : ``Out(signed(acc_bits))``
        The vector's exact accumulator (value ``o_value * 2**out_exp * ts_w * ts_x``).
    """

    latency = 5   # scale decode + mantissa product, P * m (2), shift, accumulate

    def __init__(self, config: BCQConfig, max_len):
        self.config, self.arith = config, Arithmetic(config, max_len)
        sc = unsigned(config.scale_bits)
        super().__init__({"valid": In(1), "psum": In(signed(self.arith.array_sum_bits)), "w_scale": In(sc),
                          "x_scale": In(sc), "last": In(1),
                          "o_valid": Out(1), "o_value": Out(signed(self.arith.acc_bits))})

    def elaborate(self, platform):
        m = Module()
        ar, fmt = self.arith, self.config.scale

        def reg(name, shape, value):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        mw, ew = decode_scale(m, self.w_scale, fmt, "w_scale")
        mx, ex = decode_scale(m, self.x_scale, fmt, "x_scale")
        # Shift-and-add rather than ``*``: Yosys would spend a MULT18X18D on this 4x4 product. It
        # is registered before it goes to the multiplier (the scale codes' decode and this sum
        # in one cycle into the MULT18X18D's input register made 13.2 ns in a routed 256-MAC
        # ULX3S build), and the array sum waits beside it.
        if fmt.mant_bits:
            mant = reg("s0_mant", unsigned(ar.mant_product_bits),
                       sum(Mux(mw[b], mx << b, 0) for b in range(len(mw))))
        psum = reg("s0_p", signed(ar.array_sum_bits), self.psum)
        e0 = reg("s0_shift", unsigned(ar.exp_sum_bits), ew + ex)
        v0, l0 = reg("s0_valid", 1, self.valid), reg("s0_last", 1, self.last)
        e1 = reg("s1_shift", unsigned(ar.exp_sum_bits), e0)
        v1, l1 = reg("s1_valid", 1, v0), reg("s1_last", 1, l0)
        if fmt.mant_bits:
            # P * m on a MULT18X18D with its own input and output registers where it fits (the
            # two edges from s0_p/s0_mant to s2_scaled): fabric registers around a bare
            # multiplier leave two long routes to the DSP column in one cycle.
            mb = ar.mant_product_bits + 1   # unsigned mantissa product, as a signed operand
            p2 = registered_mult(m, "s2_scaled", psum, mant.as_unsigned(), ar.array_sum_bits, mb, platform)
            p2 = p2[:ar.array_sum_bits + ar.mant_product_bits].as_signed()
        else:
            p2 = reg("s2_scaled", signed(ar.array_sum_bits), reg("s1_p", signed(ar.array_sum_bits), psum))
        e2, v2, l2 = reg("s2_shift", unsigned(ar.exp_sum_bits), e1), reg("s2_valid", 1, v1), reg("s2_last", 1, l1)
        t3 = reg("s3_term", signed(ar.scaled_bits), p2 << e2)
        v3, l3 = reg("s3_valid", 1, v2), reg("s3_last", 1, l2)
        acc = Signal(signed(ar.acc_bits), name="acc")
        total = Signal(signed(ar.acc_bits), name="acc_next")
        m.d.comb += total.eq(acc + t3)
        with m.If(v3):
            m.d.sync += acc.eq(Mux(l3, 0, total))
        m.d.sync += [self.o_valid.eq(v3 & l3), self.o_value.eq(total)]
        return m
