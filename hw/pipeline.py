"""Pieces every streaming unit here shares: a stall-all pipeline enable, enabled pipeline
registers, a balanced adder tree, the per-vector accumulator that emits on ``last``, and the
signature of a memory write port."""

import warnings

from amaranth import ClockSignal, Instance, Mux, Signal, Value, signed
from amaranth.lib import data, memory

__all__ = ["Pipeline", "tree_sum", "enabled_reg", "write_port_signature", "copy_tree", "skid_buffer", "registered_mult"]


def copy_tree(m, value, name, copies):
    """``copies`` (at most 4) registered copies of ``value``, two clock edges later, that
    synthesis keeps apart: a signal's fan-out split over row groups.

    Yosys merges flip-flops whose inputs and initial values are equal (``opt_merge``), so plain
    per-group copies became one flip-flop driving every row of the 256-MAC engine (a 16.3 ns
    route, the critical path at 59.5 MHz). Here no two flip-flops share their input: half of
    them hold the complement (initial value all ones, so every copy reads 0 out of reset, as
    ``value``'s register would) and the reader inverts it again, which folds into its LUT."""
    if not 1 <= copies <= 4:
        raise ValueError(f"copy_tree makes 1 to 4 copies, not {copies}")
    v = Value.cast(value)
    ones = (1 << len(v)) - 1

    def reg(src, inverted, suffix):
        r = Signal(len(v), init=ones if inverted else 0, name=f"{name}{suffix}")
        m.d.sync += r.eq(src)
        return r
    a, b = reg(v, False, "_a"), reg(~v, True, "_b")                 # b holds ~value
    level2 = [reg(a, False, "_0"), reg(~a, True, "_1"), reg(~b, False, "_2"), reg(b, True, "_3")]
    outs = [level2[0], ~level2[1], level2[2], ~level2[3]]
    shape = value.shape() if hasattr(value, "shape") else v.shape()
    return [data.View(shape, q) if isinstance(shape, data.Layout) else q.as_unsigned() if not v.shape().signed
            else q.as_signed() for q in outs[:copies]]


def skid_buffer(m, i, o, name):
    """Connect stream ``i`` to stream ``o`` through two registers, with nothing combinational
    in between in either direction: ``o.valid`` and ``o.payload`` are registers, and so is
    ``i.ready`` (high while the second entry is empty). The logic behind ``i.ready`` (a wide
    shift register's enable, say) then never waits on the logic behind ``o.ready``. One item per
    cycle with ``o.ready`` high; one edge of latency."""
    full = Signal(name=f"{name}_full")
    held = Signal.like(i.payload, name=f"{name}_held")
    take = i.valid & ~full
    m.d.comb += i.ready.eq(~full)
    with m.If(~o.valid | o.ready):
        m.d.sync += [o.valid.eq(full | take), o.payload.eq(Mux(full, held, i.payload)), full.eq(0)]
    with m.Elif(take):
        m.d.sync += [full.eq(1), held.eq(i.payload)]


def registered_mult(m, name, a, b, a_bits, b_bits, platform, ce=1):
    """``a * b`` with an input and an output register rank (latency 2, both loading on clock
    edges where ``ce`` is high): on ECP5 a MULT18X18D with its own registers (Yosys never absorbs
    fabric registers into it), elsewhere plain logic. An ECP5 product wider than 18 x 18 takes
    the plain form too, with a warning: Yosys then builds it from bare MULT18X18Ds whose routes
    to and from the DSP column share a cycle with the fabric registers' (a timing risk, found
    once as a 16.8 ns path of a board build)."""
    p = Signal(signed(a_bits + b_bits), name=name)
    ecp5 = getattr(platform, "family", None) == "ecp5"
    if ecp5 and (a_bits > 18 or b_bits > 18):
        warnings.warn(f"registered_mult {name}: a {a_bits} x {b_bits}-bit signed product does not fit one "
                      "MULT18X18D (18 x 18); built as fabric registers around Yosys's multiplier", stacklevel=2)
    if ecp5 and a_bits <= 18 and b_bits <= 18:
        a18, b18, p36 = Signal(signed(18), name=f"{name}_a"), Signal(signed(18), name=f"{name}_b"), Signal(36)
        m.d.comb += [a18.eq(a), b18.eq(b), p.eq(p36)]
        ports = {f"i_A{i}": a18[i] for i in range(18)}
        ports.update({f"i_B{i}": b18[i] for i in range(18)})
        ports.update({f"i_C{i}": 0 for i in range(18)})
        ports.update({f"o_P{i}": p36[i] for i in range(36)})
        m.submodules[f"{name}_dsp"] = Instance(
            "MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
            p_GSR="DISABLED", i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal("sync"), i_CLK1=0, i_CLK2=0, i_CLK3=0, i_CE0=ce, i_CE1=1, i_CE2=1, i_CE3=1,
            i_RST0=0, i_RST1=0, i_RST2=0, i_RST3=0, **ports)
    else:
        ra, rb = Signal(signed(a_bits), name=f"{name}_ra"), Signal(signed(b_bits), name=f"{name}_rb")
        with m.If(ce):
            m.d.sync += [ra.eq(a), rb.eq(b), p.eq(ra * rb)]
    return p


def write_port_signature(shape, depth):
    """The write port of a ``depth``-word memory of ``shape`` words, as a component exposes it
    (``Out(write_port_signature(...))``: ``en``, ``addr`` and ``data`` are its inputs)."""
    return memory.WritePort.Signature(addr_width=max(1, (depth - 1).bit_length()), shape=shape)


def registered_write(m, port, name):
    """``(en, addr, data)`` of the write port ``port`` one clock edge later: a register between
    the writer (the host link's control logic) and memories spread over the die, whose enable and
    address fan out to every block or LUT RAM. Writes land one cycle later; nothing reads a
    memory in the cycle after it is written (tables and weights are written between runs)."""
    en = Signal(name=f"{name}_en_q")
    addr = Signal.like(port.addr, name=f"{name}_addr_q")
    data = Signal(port.data.shape(), name=f"{name}_data_q")
    m.d.sync += [en.eq(port.en), addr.eq(port.addr), data.eq(port.data)]
    return en, addr, data


def enabled_reg(m, en, name, shape, value):
    """A register loading ``value`` on clock edges where ``en`` is high."""
    r = Signal(shape, name=name)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def tree_sum(values):
    """Balanced adder tree (log2 depth rather than a chain)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class Pipeline:
    """Global-enable pipeline between stream ``i`` and a registered stream ``o``: every stage
    advances unless a result waits at the output (``en = ~o.valid | o.ready``; ``i.ready = en``),
    so a stalled output never loses or duplicates a result."""

    def __init__(self, m, i, o):
        self.m, self.o = m, o
        self.en = Signal()
        m.d.comb += [self.en.eq(~o.valid | o.ready), i.ready.eq(self.en)]

    def reg(self, name, shape, value):
        """A pipeline register loading ``value`` whenever the pipeline advances."""
        return enabled_reg(self.m, self.en, name, shape, value)

    def accumulate(self, term, valid, last, acc_bits, payload=None):
        """Sum ``term`` over the beats of a vector; on ``last`` put the sum on ``o`` (into
        ``payload``, default ``o.payload``) and restart from zero. Returns the running sum
        including ``term`` (what the accumulator holds after it; for trace taps)."""
        m = self.m
        acc = Signal(signed(acc_bits), name="vec_acc")
        new_acc = Signal(signed(acc_bits), name="vec_acc_next")
        m.d.comb += new_acc.eq(acc + term)
        with m.If(self.en):
            m.d.sync += self.o.valid.eq(valid & last)
            with m.If(valid):
                m.d.sync += [acc.eq(Mux(last, 0, new_acc)), (self.o.payload if payload is None else payload).eq(new_acc)]
        return new_acc
