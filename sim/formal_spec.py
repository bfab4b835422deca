"""Specifications and proof harnesses for SymbiYosys (run by ``sim/formal.py``).

The specification of the block datapath is written here, separately from the gateware, in
the plainest Amaranth: the codebook table is a list of registers, every lookup indexes it,
products are multiplied and summed in a chain. Nothing from ``hw/`` is reused on the
specification side; the harnesses only instantiate the unit under proof.
"""

from amaranth import Array, ClockDomain, Const, Elaboratable, Module, Mux, Shape, Signal, Value, signed
from amaranth.asserts import AnyConst, AnySeq  # amaranth 0.5 keeps these here (not deprecated)
from amaranth.hdl import Assert, Assume
import torch

from bcq.hw.bcq_block import CodewordDecode, PlaneSum, ProductPlanes
from bcq.hw.bcq_dot import BCQDot
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.golden import dot_fixed
from bcq.sw.formats.lobcq import BCQTensor

__all__ = ["TableEntrySpec", "spec_word_address", "spec_field", "spec_sum", "spec_plane", "spec_plane_sum", "plane_identity_holds",
           "decode_harness", "decode_depth", "planes_harness", "planes_depth", "products_harness", "products_depth",
           "stream_harness", "stream_dut", "stream_depth"]


class TableEntrySpec(Elaboratable):
    """The codebook table, said plainly, at one word: ``value`` is word ``address`` of the pair
    table (``bcq.sw.contract.tables``: three codewords per word), 0 from reset, then the data of
    the last ``cbw`` write to that address; a write lands at the clock edge, so ``value``
    during a cycle is the content before that cycle's write. With ``address`` an unconstrained
    constant (``AnyConst``), a property that holds for this word holds for every word: this
    is the whole table, checked one arbitrary word at a time (which keeps the solver away from
    a 1024-way mux equivalence)."""

    def __init__(self, config: BCQConfig, address):
        self.config, self.address = config, address
        depth = config.n_codebooks * config.n_entries * 8
        self.cbw_en = Signal()
        self.cbw_addr = Signal(range(depth))
        self.cbw_data = Signal(3 * config.entry_bits)
        self.value = Signal(3 * config.entry_bits)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.cbw_en & (self.cbw_addr == self.address)):
            m.d.sync += self.value.eq(self.cbw_data)
        return m


def spec_word_address(config: BCQConfig, sel, a, b):
    """The pair table's word for a block's scalars ``2p`` (index ``a``) and ``2p + 1`` (index
    ``b``) in codebook ``sel`` (ignored when Nc = 1): ``(sel * 16 + a) * 8 + b // 2``."""
    entry = sel * config.n_entries + a if config.selector_bits else a
    return entry * 8 + b // 2


def spec_field(config: BCQConfig, word, k):
    """Codeword ``k`` (0, 1, 2) of a pair table word: ``entry_bits`` two's complement bits."""
    E = config.entry_bits
    return word.bit_select(k * E, E).as_signed()


def spec_sum(w_words, x_words):
    """``sum_j w[j] * x[j]``, exact (32-bit signed is far wider than any beat sum here)."""
    total = Const(0, signed(32))
    for w, x in zip(w_words, x_words):
        total = total + w * x
    return total


def _harness():
    """A module with a reset-less ``sync`` domain (every register starts from its init value;
    BMC starts from that state) and the clock that must become its port."""
    m = Module()
    cd = ClockDomain("sync", reset_less=True)
    m.domains += cd
    return m, cd.clk


def _free(m, shape, name):
    """A signal the solver chooses anew every cycle."""
    s = Signal(shape, name=name)
    m.d.comb += Value.cast(s).eq(AnySeq(Shape.cast(shape).width))
    return s


def _delayed(m, en, value, stages, name):
    """``value`` after ``stages`` edges with ``en`` high, and whether that many have passed."""
    full = Const(1)
    for k in range(stages):
        v, f = Signal(value.shape(), name=f"{name}{k}"), Signal(name=f"{name}_full{k}")
        with m.If(en):
            m.d.sync += [v.eq(value), f.eq(full)]
        value, full = v, f
    return value, full


def decode_harness(config: BCQConfig, lane, blocks_per_cycle=1):
    """Returns ``(module, clock)``: lane ``lane`` of :class:`CodewordDecode` gives, for both
    operands, the codeword that the spec reads from the pair table (``spec_word_address``,
    ``spec_field``: scalar ``2p`` takes field 0 of the word of its pair, scalar ``2p + 1``
    field ``1 + b % 2``), as the table was on the edge that took the beat, for every beat,
    table write sequence and stall pattern (``en``). The table is the spec's
    :class:`TableEntrySpec` at an arbitrary word ``A``; each lookup whose word is ``A`` must
    return its field of that word. One proof per lane (``sim/formal.py`` runs them all): a
    lane's outputs depend on its own two table copies only, and one lane at a time keeps the
    solver's problem small.

    A table copy serves four lanes; its port A is shared by the write port and the lookup of
    lanes ``4q``, ``4q + 1`` (``BCQDot``'s contract: no write while a vector is in flight). For
    those lanes, a beat taken on an edge with a write (``cbw.en``) is therefore outside the
    contract and not checked; lanes ``4q + 2``, ``4q + 3`` (port B) are checked for every beat,
    writes included.

    BMC depth (``decode_depth``): the checked outputs depend on word ``A`` of the lane's two
    table copies and on the two pipeline registers behind each (read data with the low index
    bit, codeword). Every combination of those is reachable in ``latency + 1`` steps from reset
    (write ``A``, read it while writing ``A`` again, ...), and its check lands ``latency`` steps
    later; one more step covers a stall (registers hold while ``en`` is low, so a longer stall is
    no different from a one-cycle stall with the same writes). Depth 2 * latency + 2."""
    m, clk = _harness()
    m.submodules.dut = dut = CodewordDecode(BeatGeometry(config, blocks_per_cycle))
    words = config.n_codebooks * config.n_entries * 8
    address = Signal(range(words), name="tracked_address")
    m.d.comb += [address.eq(AnyConst(address.shape().width)), Assume(address < words)]
    m.submodules.spec = spec = TableEntrySpec(config, address)

    en = _free(m, 1, "en")
    beat = _free(m, dut.beat.shape(), "beat")
    cbw_en = _free(m, 1, "cbw_en")
    cbw_addr = _free(m, spec.cbw_addr.shape(), "cbw_addr")
    cbw_data = _free(m, spec.cbw_data.shape(), "cbw_data")
    m.d.comb += Assume(cbw_addr < words)
    m.d.comb += [dut.en.eq(en), dut.beat.eq(beat),
                 dut.cbw.en.eq(cbw_en), dut.cbw.addr.eq(cbw_addr), dut.cbw.data.eq(cbw_data),
                 spec.cbw_en.eq(cbw_en), spec.cbw_addr.eq(cbw_addr), spec.cbw_data.eq(cbw_data)]
    block, first = lane // config.block_len, lane - lane % 2
    for op, got in (("w", dut.w_words[lane]), ("x", dut.x_out[lane])):
        sel = beat[f"{op}_sel"][block] if config.selector_bits else None
        a, b = beat[f"{op}_idx"][first], beat[f"{op}_idx"][first + 1]
        hit = Signal(name=f"{op}_reads_tracked")
        in_contract = ~cbw_en if (lane // 2) % 2 == 0 else Const(1)
        m.d.comb += hit.eq((spec_word_address(config, sel, a, b) == address) & in_contract)
        field = Signal(2, name=f"{op}_field")
        m.d.comb += field.eq(0 if lane % 2 == 0 else 1 + b % 2)
        hit_d, full = _delayed(m, en, hit, CodewordDecode.latency, f"{op}_hit")
        field_d, _ = _delayed(m, en, field, CodewordDecode.latency, f"{op}_field_d")
        want, _ = _delayed(m, en, spec.value, CodewordDecode.latency, f"{op}_want")
        expect = Mux(field_d == 0, spec_field(config, want, 0),
                     Mux(field_d == 1, spec_field(config, want, 1), spec_field(config, want, 2)))
        m.d.comb += Assert(~(full & hit_d) | (got == expect))
    return m, clk


def decode_depth(config: BCQConfig, blocks_per_cycle=1):
    return 2 * CodewordDecode.latency + 2


def spec_plane(config: BCQConfig, w_words, x_words, b, i):
    """Plane value ``(b, i)``: the bit-``b`` partial products of lanes ``2i`` and ``2i + 1`` (the
    lane's codeword where its weight has bit ``b`` set, else 0), added."""
    return sum((Mux(w_words[j][b], x_words[j], 0) for j in (2 * i, 2 * i + 1)), Const(0, signed(32)))


def spec_plane_sum(config: BCQConfig, planes, lanes):
    """``sum_k s_k * 2**b_k * planes[k]``: bit ``b`` weighs ``2**b``, the sign bit ``-2**b``
    (two's complement), so that with :func:`spec_plane` values this is ``sum_j w_j * x_j``
    (``plane_identity_holds``)."""
    total = Const(0, signed(32))
    for k, v in enumerate(planes):
        b = k // (lanes // 2)
        total = total - (v << b) if b == config.entry_bits - 1 else total + (v << b)
    return total


def plane_identity_holds(config: BCQConfig):
    """Exhaustively, for every pair of entries ``w``, ``x``: ``w * x`` equals the sum over the
    bits ``b`` of ``w`` of ``+-2**b * x`` (the sign bit negative). With the commutativity of
    integer addition this makes ``spec_plane_sum`` of the ``spec_plane`` values the sum of
    products ``spec_sum``; tests/test_formal.py checks it (an SMT solver takes hours on the
    regrouped multipliers, Python takes milliseconds)."""
    e = config.entry_bits
    for w in range(config.entry_min, config.entry_max + 1):
        bits = [(w >> b) & 1 for b in range(e)]
        for x in range(config.entry_min, config.entry_max + 1):
            total = sum(x << b for b in range(e - 1) if bits[b]) - (x << (e - 1) if bits[e - 1] else 0)
            if total != w * x:
                return False
    return True


def planes_harness(config: BCQConfig, blocks_per_cycle=1):
    """Returns ``(module, clock)``: :class:`ProductPlanes` (the first chain level of the products,
    Amaranth model of the CCU2C cells) gives :func:`spec_plane` of the codewords taken on the
    last enabled edge, for every plane, all codewords and stall patterns. Depth
    ``planes_depth``: one register level, so latency + 2 steps reach every combination."""
    m, clk = _harness()
    lanes = config.block_len * blocks_per_cycle
    m.submodules.dut = dut = ProductPlanes(config, lanes, cells="model")
    en = _free(m, 1, "en")
    w = _free(m, dut.w_words.shape(), "w_words")
    x = _free(m, dut.x_words.shape(), "x_words")
    m.d.comb += [dut.en.eq(en), dut.w_words.eq(w), dut.x_words.eq(x)]
    for b in range(config.entry_bits):
        for i in range(lanes // 2):
            k = b * (lanes // 2) + i
            want = Signal(signed(32), name=f"spec_plane{k}")
            m.d.comb += want.eq(spec_plane(config, w, x, b, i))
            exp, full = _delayed(m, en, want, ProductPlanes.latency, f"expected{k}")
            m.d.comb += Assert(~full | (dut.planes[k] == exp))
    return m, clk


def planes_depth(config: BCQConfig, blocks_per_cycle=1):
    return ProductPlanes.latency + 2


def spec_adder(u, v, cin=None):
    """What one carry-chain adder of the tree must compute, exactly (no truncation): the two
    operand Terms (``value``, ``shift``, ``neg``, optional AND ``gate``) aligned to the smaller
    shift and added, or subtracted where one of them is ``neg`` (two ``neg`` operands add their
    magnitudes, the result then being ``neg``); plus the carry in."""
    s = min(u.shift, v.shift)

    def val(t):
        x = t.value if t.gate is None else Mux(~t.gate if t.gate_inv else t.gate, t.value, 0)
        return x << (t.shift - s)
    if u.neg != v.neg:
        pos, neg = (v, u) if u.neg else (u, v)
        return val(pos) - val(neg)
    return val(u) + val(v) + (cin if cin is not None else 0)


def tree_structure_holds(config: BCQConfig, lanes, structure=None):
    """The tree of :class:`PlaneSum` (``structure``: its elaborated ``(leaves, log, total)``), read
    as a graph of exact adders (``spec_adder``) and registers, computes ``spec_plane_sum`` of
    its leaves: a symbolic evaluation in which every value is a linear form over the plane values
    (coefficient ``+-2**b`` per plane). With ``products`` (each adder is exact, all inputs and
    stall patterns) this proves the tree equal to ``spec_plane_sum``."""
    if structure is None:
        dut = PlaneSum(config, lanes, cells="model")
        dut.elaborate(None)._MustUse__silence = True    # only the structure is read
        dut._MustUse__silence = True
        structure = dut._structure
    leaves, log, total = structure
    forms = {}   # id(Term.value) -> {plane: coefficient} of the value's *effective* contribution

    def eff(t):
        return {k: c for k, c in forms[id(t.value)].items()}
    for k, t in enumerate(leaves):
        forms[id(t.value)] = {k: (-1 if t.neg else 1) << t.shift}
    for entry in log:
        if entry[0] == "reg":
            _, new, old = entry
            forms[id(new.value)] = eff(old)
            continue
        _, out, u, v, cin = entry
        if cin is not None or u.gate is not None or v.gate is not None:
            return False      # the plane tree has neither carry ins nor gates
        # spec_adder: out * 2**s is u's plus v's contribution, with signs as the neg flags say.
        form = eff(u)
        for k, c in eff(v).items():
            form[k] = form.get(k, 0) + c
        sign_ok = out.neg == (u.neg and v.neg)
        if not sign_ok:
            return False
        forms[id(out.value)] = form
    want = {k: (-1 if k // (lanes // 2) == config.entry_bits - 1 else 1) << (k // (lanes // 2))
            for k in range(len(leaves))}
    got = {k: c for k, c in forms.get(id(total.value), {}).items() if c}
    return got == want and total.shift == 0 and not total.neg


def products_harness(config: BCQConfig, blocks_per_cycle=1, cells="model"):
    """Returns ``(module, clock)``: every carry-chain adder of :class:`PlaneSum` (the adder tree
    of the products, Amaranth model of the CCU2C cells) computes exactly :func:`spec_adder` of
    its operands, on every cycle, for all plane values and stall patterns. With
    ``tree_structure_holds`` (the adders and registers, as wired, sum the planes: checked
    symbolically), ``planes`` (the first level == ``spec_plane``) and ``plane_identity_holds``
    this proves :class:`BeatProducts` equal to :func:`spec_sum` of the codewords. (One end-to-end
    assertion ``beat_sum == spec_plane_sum`` is the same statement, but SMT solvers do not finish
    it in hours: the tree regroups 24 sign-extended sums; one adder at a time takes seconds.)

    BMC depth (``products_depth``): the unit has no state but its pipeline registers, whose
    contents after ``latency`` enabled edges are functions of the values taken on those edges
    only. latency + 2 steps therefore reach every (values, stall) combination that can matter."""
    m, clk = _harness()
    lanes = config.block_len * blocks_per_cycle
    dut = PlaneSum(config, lanes, cells=cells)
    m.submodules.dut = dut.elaborate(None)    # elaborated here: the harness reads its adders
    dut._MustUse__silence = True              # (used through its elaborated module)
    en = _free(m, 1, "en")
    planes = _free(m, dut.planes.shape(), "planes")
    # Plane values are sums of two codewords.
    m.d.comb += [Assume((planes[k] >= 2 * config.entry_min) & (planes[k] <= 2 * config.entry_max))
                 for k in range(len(planes))]
    m.d.comb += [dut.en.eq(en), dut.planes.eq(planes)]
    _, log, _ = dut._structure
    for entry in log:
        if entry[0] == "add":
            _, out, u, v, cin = entry
            m.d.comb += Assert(out.value == spec_adder(u, v, cin))
    return m, clk


def products_depth(config: BCQConfig, blocks_per_cycle=1):
    return PlaneSum(config, config.block_len * blocks_per_cycle).latency + 2


def stream_depth(config: BCQConfig):
    """BMC depth of the stream proof: ``beats_per_array + latency + 2``. Control state is the
    beat counter inside an array and the valid/end/last bits of the ``latency`` stages. The
    depth covers a vector that crosses an array boundary (``beats_per_array + 1`` beats) with
    its result leaving the pipeline, shorter vectors back to back with stalls at every stage,
    and a full pipeline (it holds at most ``latency`` results) held by ``o.ready`` low. Every
    property is checked at every step up to that depth; longer runs only repeat these control
    states (the beat counter wraps every ``beats_per_array`` beats)."""
    return config.blocks_per_array + stream_dut(config).latency + 2


def stream_scale_code(config: BCQConfig):
    """A fixed scale code of 1.0 for the stream proof."""
    return 0x38 if config.scale.name == "e4m3" else 127


def _per_beat(config: BCQConfig, codebooks, code):
    """Accumulator increase per beat when every codeword is 1 and every scale code is ``code``,
    from the golden model (one array of indices 0)."""
    n = config.array_len
    t = BCQTensor(codebooks, torch.zeros(n, dtype=torch.uint8), torch.zeros(n // config.block_len, dtype=torch.uint8),
                  torch.full((1,), code, dtype=torch.uint8))
    total = int(dot_fixed(t, t))
    beats = config.blocks_per_array
    assert total % beats == 0
    return total // beats


def stream_dut(config: BCQConfig):
    """The unit under the stream proof: every codebook entry 1 (a ROM), chains as the Amaranth
    model of the CCU2C cells."""
    ones = Codebooks(config, torch.ones(config.n_codebooks, config.n_entries, dtype=torch.int64))
    return BCQDot(config, codebooks=ones, codebook_rom=True, cells="model")


def stream_harness(config: BCQConfig):
    """Returns ``(module, clock)``. Stream contract of the whole :class:`BCQDot` under every valid/ready pattern.

    Data are made to count beats: a ROM codebook whose every entry is 1 and a fixed scale code,
    so each accepted beat adds the same amount (``_per_beat``, from the golden model) to its
    vector's result. A reference queue in the harness records, for each accepted ``last`` beat,
    the value its vector must produce. Asserted every cycle:

    * a transfer on ``o`` has a queued vector and carries exactly its value, in order (no
      invented or duplicated result, no beat lost or counted twice inside a vector);
    * at most ``latency`` vectors are in flight;
    * ``o`` holds ``valid`` and ``payload`` while not ready (nothing withdrawn);
    * if ``i.ready`` was high on each of the last ``latency`` cycles, ``o.valid`` now equals
      "a ``last`` beat was accepted ``latency`` cycles ago" (no result dropped or late).
    """
    m, clk = _harness()
    m.submodules.dut = dut = stream_dut(config)
    code = stream_scale_code(config)
    per_beat = _per_beat(config, dut.codebooks, code)
    L = dut.latency

    p = dut.i.payload
    m.d.comb += [dut.i.valid.eq(AnySeq(1)), dut.o.ready.eq(AnySeq(1)),
                 p.w_idx.as_value().eq(AnySeq(len(p.w_idx.as_value()))),
                 p.x_idx.as_value().eq(AnySeq(len(p.x_idx.as_value()))),
                 p.last.eq(AnySeq(1)), p.w_scale.eq(code), p.x_scale.eq(code)]
    if config.selector_bits:
        m.d.comb += [p.w_sel.as_value().eq(AnySeq(len(p.w_sel.as_value()))),
                     p.x_sel.as_value().eq(AnySeq(len(p.x_sel.as_value())))]

    take = Signal()
    take_last = Signal()
    give = Signal()
    m.d.comb += [take.eq(dut.i.valid & dut.i.ready), take_last.eq(take & p.last),
                 give.eq(dut.o.valid & dut.o.ready)]

    # Reference queue of expected results.
    depth = L + 2   # more than can be in flight, so an overflow shows as a failed bound
    acc_shape = dut.o.payload.shape()
    queue = Array(Signal(acc_shape, name=f"queue{k}") for k in range(depth))
    head = Signal(range(depth))
    tail = Signal(range(depth))
    count = Signal(range(depth + 1))
    beats = Signal(16)   # beats of the current vector; BMC depth keeps it far below 2**16

    def succ(ptr):
        return Mux(ptr == depth - 1, 0, ptr + 1)

    with m.If(take):
        m.d.sync += beats.eq(beats + 1)
        with m.If(p.last):
            m.d.sync += [beats.eq(0), queue[tail].eq((beats + 1) * per_beat), tail.eq(succ(tail))]
    with m.If(give):
        m.d.sync += head.eq(succ(head))
        m.d.comb += [Assert(count > 0), Assert(dut.o.payload == queue[head])]
    m.d.sync += count.eq(count + take_last - give)
    m.d.comb += Assert(count + take_last - give <= L)

    # Held while stalled.
    was_stalled = Signal()
    held = Signal(acc_shape)
    m.d.sync += [was_stalled.eq(dut.o.valid & ~dut.o.ready), held.eq(dut.o.payload)]
    m.d.comb += Assert(~was_stalled | (dut.o.valid & (dut.o.payload == held)))

    # Exact latency while the pipeline runs freely.
    ran, lasts, started = Const(1), take_last, Const(1)
    for k in range(L):
        r, t, s = Signal(name=f"ran{k}"), Signal(name=f"took_last{k}"), Signal(name=f"started{k}")
        m.d.sync += [r.eq(dut.i.ready & ran if k else dut.i.ready), t.eq(lasts), s.eq(started)]
        ran, lasts, started = r, t, s
    m.d.comb += Assert(~(started & ran) | (dut.o.valid == lasts))
    return m, clk
