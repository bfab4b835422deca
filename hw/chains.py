"""ECP5 carry-chain arithmetic with logic folded into the chain's LUTs.

An ECP5 ``CCU2C`` half computes, from its four inputs and the carry in,

    f = LUT4_INIT(A, B, C, D)          (the propagate)
    S = f ^ CIN
    COUT = f ? CIN : LUT4_INIT(A, B, 0, 0)   (the generate is the LUT's C = D = 0 quarter)

(Yosys ``share/ecp5/ccu2c_sim.vh``). So a half adds ``u + v`` of two *bit functions*
``u(A, B)`` and ``v(B, C, D)`` for free, provided ``v(B, 0, 0) = 0``: then ``f = u ^ v`` and,
where ``f = 0`` (``u = v``), the generate ``f(A, B, 0, 0) = u`` is the right carry. Yosys never
uses this (its ``$alu`` map puts plain ``A + B`` in the chain and every AND gate, mux or
inverter in front of it in separate LUT4s); here we instantiate ``CCU2C`` ourselves and fold

* partial-product AND gates:  ``(x_i & w_a) + (x_j & w_b)`` - one radix-4 partial product or two
  lanes' bit-plane terms per chain, no LUT4 at all;
* an inverted gate (``x_i & ~w_5``: an offset-binary operand);
* an accumulator's restart mux:  ``beat + (first ? init : acc)``.

Every helper takes ``mode``: ``"ccu2c"`` emits ``Instance("CCU2C")`` (for Yosys/nextpnr, and
for Verilator/Icarus with the cell's behavioural model ``sim/ecp5_cells.v``), ``"model"`` an
Amaranth model of the very same cells reading the same INIT constants (for the Amaranth
simulator and the SymbiYosys proofs: simulating it checks the INIT values and the wiring bit for
bit), ``"rtl"`` plain Amaranth ``&``/``+`` of the same terms (what Yosys makes of the same
algorithm without folding). ``tests/test_chains.py`` proves the ``"ccu2c"`` netlist (with
Yosys's own ECP5 cell model) equal to ``"model"`` and ``"rtl"``.

Ported from the stand-alone prototypes of issue 13 (eng13: ``chains.py``).
"""

from dataclasses import dataclass

from amaranth import Cat, Const, Mux, Signal, signed, unsigned
from amaranth.hdl import Instance

__all__ = ["Term", "lut_init", "carry_chain", "chain_add", "chain_acc", "range_bits", "range_shape",
           "pipelined_tree", "register", "tree_levels", "adder_value", "MODES"]

MODES = ("ccu2c", "model", "rtl")


def lut_init(fn):
    """INIT of a LUT4 computing ``fn(A, B, C, D)`` (inputs and result are 0/1 ints)."""
    init = 0
    for i in range(16):
        a, b, c, d = i & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1
        if fn(a, b, c, d) & 1:
            init |= 1 << i
    return init


def range_bits(lo, hi):
    """(width, signed) of the narrowest two's-complement or unsigned shape holding [lo, hi]."""
    if lo >= 0:
        return max(1, hi.bit_length()), False
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1, True


def range_shape(lo, hi):
    w, s = range_bits(lo, hi)
    return signed(w) if s else unsigned(w)


_ZERO = Const(0, 1)


def _cell_model(m, name, init, a, b, c, d, cin):
    """Amaranth model of one CCU2C half (INJECT1 = "NO"). Returns (S, COUT)."""
    f = Signal(name=f"{name}_f")
    g = Signal(name=f"{name}_g")
    co = Signal(name=f"{name}_co")      # a signal, not a nested expression (simulator depth)
    m.d.comb += [f.eq(Const(init, 16).bit_select(Cat(a, b, c, d), 1)),
                 g.eq(Const(init & 0xF, 4).bit_select(Cat(a, b), 1)),
                 co.eq(Mux(f, cin, g))]
    return f ^ cin, co


def carry_chain(m, name, cells, cin=None, *, mode):
    """A carry chain of ``cells`` (list of ``(init, (A, B, C, D))``, LSB first; inputs are 1-bit
    values). ``cin`` None means a constant-0 carry in. Returns the list of sum bits."""
    if cin is None:
        cin = _ZERO
    if len(cells) % 2:
        cells = cells + [(0, (_ZERO,) * 4)]   # padding half: S = CIN, unused
        pad = True
    else:
        pad = False
    outs = []
    carry = cin
    for k in range(0, len(cells), 2):
        (i0, (a0, b0, c0, d0)), (i1, (a1, b1, c1, d1)) = cells[k], cells[k + 1]
        if mode == "ccu2c":
            s0, s1, co = Signal(name=f"{name}_s{k}"), Signal(name=f"{name}_s{k+1}"), Signal(name=f"{name}_co{k}")
            m.submodules[f"{name}_ccu{k // 2}"] = Instance(
                "CCU2C", p_INIT0=Const(i0, 16), p_INIT1=Const(i1, 16), p_INJECT1_0="NO", p_INJECT1_1="NO",
                i_CIN=carry, i_A0=a0, i_B0=b0, i_C0=c0, i_D0=d0, i_A1=a1, i_B1=b1, i_C1=c1, i_D1=d1,
                o_S0=s0, o_S1=s1, o_COUT=co)
            carry = co
        else:
            s0, c_mid = _cell_model(m, f"{name}_h{k}", i0, a0, b0, c0, d0, carry)
            s1, carry = _cell_model(m, f"{name}_h{k+1}", i1, a1, b1, c1, d1, c_mid)
        outs += [s0, s1]
    return outs[:len(outs) - 1] if pad else outs


@dataclass
class Term:
    """An addend ``(value & gate) << shift`` (gate None: plain). ``value`` is an Amaranth value
    whose own shape says whether it is signed; ``lo``/``hi`` bound it (before gate and shift)."""
    value: object
    lo: int
    hi: int
    shift: int = 0
    gate: object = None
    gate_inv: bool = False
    neg: bool = False          # the term is subtracted

    @property
    def elo(self):   # effective range after gating
        return min(0, self.lo) if self.gate is not None else self.lo

    @property
    def ehi(self):
        return max(0, self.hi) if self.gate is not None else self.hi

    def bit(self, p, s):
        """Bit ``p`` of this term expressed in units of ``2**s`` (s <= shift), ungated; None if 0."""
        q = p - (self.shift - s)
        if q < 0:
            return None
        v = self.value
        w = len(v)
        if q >= w:
            if v.shape().signed:
                return v[w - 1]
            return None
        return v[q]


def chain_add(m, name, u: Term, v: Term, *, mode, cin=None, log=None):
    """``u + v (+ cin)`` on one carry chain, AND gates folded in. Returns a plain ``Term`` of the
    exact range (shift = the smaller of the two shifts). Gated terms may sit on either side.

    Negative terms (``neg``): two negatives add as ``-(|u| + |v|)`` (result ``neg``); one plain
    negative ``v`` gives ``u - |v| = u + ~|v| + 1``: ``~|v|`` goes on the (A, B) side, where an
    inverted operand is allowed (``f = ~A ^ v(C, D)``, generate ``f(A, B, 0, 0) = ~A``), and the
    ``+1`` is the chain's carry in (so such an adder absorbs no other carry)."""
    s = min(u.shift, v.shift)
    sub = u.neg != v.neg
    if sub:
        if u.neg:
            u, v = v, u                       # u: the positive operand, v: the one to subtract
        assert v.gate is None and cin is None, "subtract only a plain term, without another carry"
        lo = (u.elo << (u.shift - s)) - (v.ehi << (v.shift - s))
        hi = (u.ehi << (u.shift - s)) - (v.elo << (v.shift - s))
    else:
        lo = (u.elo << (u.shift - s)) + (v.elo << (v.shift - s))
        hi = (u.ehi << (u.shift - s)) + (v.ehi << (v.shift - s)) + (1 if cin is not None else 0)
    neg = u.neg and v.neg
    width, sgn = range_bits(lo, hi)
    out = Signal(signed(width) if sgn else unsigned(width), name=name)
    if log is not None:
        log.append(("add", Term(out, lo, hi, s, neg=neg), u, v, cin))
    if mode == "rtl":
        def val(t):
            x = t.value
            if t.gate is not None:
                g = ~t.gate if t.gate_inv else t.gate
                x = Mux(g, x, 0)
            return x << (t.shift - s)
        m.d.comb += out.eq(val(u) - val(v) if sub else val(u) + val(v) + (cin if cin is not None else 0))
        return Term(out, lo, hi, s, neg=neg)

    def present(t, p):
        return t.bit(p, s) is not None

    if sub:
        # The +1 of the two's complement enters where v starts; below it only u (plain) remains.
        p0 = v.shift - s
        assert all(not present(u, p) or u.gate is None for p in range(p0)), "gated bits below a subtrahend"
        cin = Const(1, 1)
        a_side, c_side = v, u
    else:
        # Bits below the first place where a cell is needed are plain wires (one plain operand).
        p0 = 0 if cin is not None else width
        for p in range(width):
            if (present(u, p) and present(v, p)) or (present(u, p) and u.gate is not None) \
                    or (present(v, p) and v.gate is not None):
                p0 = min(p0, p)
                break
        a_side, c_side = u, v
    bits = []
    for p in range(min(p0, width)):
        t = u if present(u, p) else v if (not sub and present(v, p)) else None
        bits.append(t.bit(p, s) if t is not None else _ZERO)
    # a_side on (A, B), c_side on (C, D): f = a(A, B) ^ c(C, D) with c(0, 0) = 0; the a side may
    # be inverted (subtrahend) since the generate f(A, B, 0, 0) = a(A, B) whatever a is.
    ai, ci = (1 if a_side.gate_inv else 0), (1 if c_side.gate_inv else 0)

    def fn_of(ag, cg, ap, cp):
        def f(a, b, c, d):
            aa = (a & (b ^ ai)) if ag else a
            if sub:
                aa = (aa ^ 1) if ap else 1    # ~v, sign-extended ones included
            cc = (c & (d ^ ci)) if cg else c
            return ((aa if (ap or sub) else 0) ^ (cc if cp else 0)) & 1
        return f

    cells = []
    for p in range(p0, width):
        ab, cb = a_side.bit(p, s), c_side.bit(p, s)
        ins = (ab if ab is not None else _ZERO, a_side.gate if (a_side.gate is not None and ab is not None) else _ZERO,
               cb if cb is not None else _ZERO, c_side.gate if (c_side.gate is not None and cb is not None) else _ZERO)
        cells.append((lut_init(fn_of(a_side.gate is not None, c_side.gate is not None, ab is not None, cb is not None)), ins))
    if cells:
        bits += carry_chain(m, name, cells, cin, mode=mode)
    m.d.comb += out.eq(Cat(*bits))
    return Term(out, lo, hi, s, neg=neg)


def chain_acc(m, name, beat, sel, when0, when1, width, *, mode, cin=None):
    """``beat + (sel ? when1 : when0) (+ cin)`` modulo 2**width on one chain; the mux is folded
    into the LUTs (u = beat on A; v = mux(B=sel, C=when0, D=when1), so v(B, 0, 0) = 0).
    ``beat`` is sign-extended; ``when0``/``when1`` must be ``width`` bits. Returns a signed Signal."""
    out = Signal(signed(width), name=name)
    if mode == "rtl":
        m.d.comb += out.eq(beat + Mux(sel, when1, when0) + (cin if cin is not None else 0))
        return out
    init = lut_init(lambda a, b, c, d: a ^ (d if b else c))
    cells = []
    for p in range(width):
        bb = beat[min(p, len(beat) - 1)] if (p < len(beat) or beat.shape().signed) else _ZERO
        cells.append((init, (bb, sel, when0[p], when1[p])))
    m.d.comb += out.eq(Cat(*carry_chain(m, name, cells, cin, mode=mode)))
    return out


def register(m, name, value, en):
    """A register loading ``value`` on clock edges where ``en`` is high (the unit's pipeline
    enable: the flip-flop's clock enable, no LUT)."""
    r = Signal(value.shape(), name=name)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def tree_levels(n):
    """Register levels of :func:`pipelined_tree` over ``n`` terms (one per adder level)."""
    levels = 0
    while n > 1:
        n, levels = (n + 1) // 2, levels + 1
    return levels


def adder_value(u: Term, v: Term, cin=None):
    """What :func:`chain_add` computes, as a plain Amaranth expression (exact, no truncation):
    ``u + v (+ cin)``, or ``u - v`` for one ``neg`` operand, gates and shifts applied (two
    negatives add their magnitudes)."""
    s = min(u.shift, v.shift)

    def val(t):
        x = t.value
        if t.gate is not None:
            x = Mux(~t.gate if t.gate_inv else t.gate, x, 0)
        return x << (t.shift - s)
    if u.neg != v.neg:
        pos, neg = (v, u) if u.neg else (u, v)
        return val(pos) - val(neg)
    return val(u) + val(v) + (cin if cin is not None else 0)


def pipelined_tree(m, name, terms, *, mode, en, carries=(), reg_every=1, log=None):
    """Sum ``terms`` (list of Term) with a balanced tree of chain adders, a register rank
    (enabled by ``en``) after every ``reg_every`` adder levels. Single-bit ``carries`` are
    absorbed as the adders' carry ins (one per adder). Returns ``(Term, register_levels,
    leftover_carries)``; the leftover carries (and the result) are valid ``register_levels``
    enabled edges after ``terms``. ``log``: as for :func:`chain_add`, plus ``("reg", new, old)``
    for each register rank's Terms."""
    terms, carries = list(terms), list(carries)
    pending = []          # carries registered alongside, consumed by later adders
    level = regs = 0
    while len(terms) > 1:
        terms.sort(key=lambda t: (t.shift, len(t.value)))
        nxt = []
        for k in range(0, len(terms) - 1, 2):
            sub = terms[k].neg != terms[k + 1].neg
            cin = carries.pop() if (carries and not sub) else None
            nxt.append(chain_add(m, f"{name}_l{level}_{k // 2}", terms[k], terms[k + 1], mode=mode, cin=cin, log=log))
        if len(terms) % 2:
            t = terms[-1]
            if t.gate is not None:   # a lone gated leaf: one chain computes the AND itself
                t = chain_add(m, f"{name}_l{level}_odd", t, Term(Const(0, 1), 0, 0, t.shift), mode=mode, log=log)
            nxt.append(t)
        terms = nxt
        level += 1
        if level % reg_every == 0 or len(terms) == 1:
            regd = [Term(register(m, f"{name}_r{level}_{k}", t.value, en), t.lo, t.hi, t.shift, neg=t.neg)
                    for k, t in enumerate(terms)]
            if log is not None:
                log += [("reg", new, old) for new, old in zip(regd, terms)]
            terms = regd
            carries = [register(m, f"{name}_rc{level}_{k}", c, en) for k, c in enumerate(carries)]
            regs += 1
    return terms[0], regs, carries
