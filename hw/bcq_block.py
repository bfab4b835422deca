"""The block datapath of the BCQ dot-product unit: codebook decode, codeword products and the
sum over one beat's blocks. :class:`bcq.hw.bcq_dot.BCQDot` instantiates it; ``sim/formal.py``
proves it equal to a separately written specification (``sim/formal_spec.py``) for all inputs."""


from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import bcq_beat_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.contract.tables import pair_table_depth, pair_table_width, pair_table_words
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import Arithmetic

from .chains import MODES, Term, chain_add, pipelined_tree, register, tree_levels
from .pipeline import enabled_reg, write_port_signature

__all__ = ["BlockDatapath", "CodewordDecode", "BeatProducts", "codebook_write_signature", "pair_table_write_signature",
           "codebook_address",
           "codebook_lookup", "products_latency", "ProductPlanes", "PlaneSum", "plane_layout", "plane_bit"]


def codebook_write_signature(config: BCQConfig):
    """Run-time codebook write port (a memory write port's signature; a component exposes it as
    ``Out(...)``, whose members are its inputs): entry ``addr = selector * 16 + index`` gets
    ``data`` on a clock edge where ``en`` is high."""
    return write_port_signature(signed(config.entry_bits), config.n_codebooks * config.n_entries)


def pair_table_write_signature(config: BCQConfig):
    """The BCQ dot-product unit's codebook write port: word ``addr`` of the pair table
    (``bcq.sw.contract.tables``; ``pair_table_words`` makes the words) gets ``data`` on a clock
    edge where ``en`` is high."""
    return write_port_signature(unsigned(pair_table_width(config)), pair_table_depth(config))


def codebook_address(config: BCQConfig, idx, sel):
    """Table address of index ``idx`` in codebook ``sel`` (``sel`` None when Nc = 1)."""
    return Cat(idx, sel) if config.selector_bits else idx


def codebook_lookup(m, name, config: BCQConfig, init, cbw, addr, en):
    """One copy of the Nc x 16 codebook table with one synchronous read port (maps onto a block
    RAM); every copy is written through the shared ``cbw`` port (None: a ROM). Returns the
    read data, valid the cycle after ``addr`` and held while ``en`` is low. A read and a write
    of the same entry on one clock edge read the old value."""
    # no_rw_check: the codebook is written while no vector is in flight (BCQDot's ``cbw``
    # contract), so a read never meets a write of its own entry in use; without the attribute
    # Yosys wraps every table in read-old-data collision logic (~20 LUT4 per table).
    mem = memory.Memory(shape=signed(config.entry_bits), depth=config.n_codebooks * config.n_entries, init=init,
                        attrs={"no_rw_check": 1})
    m.submodules[name] = mem
    if cbw is not None:
        wiring.connect(m, wiring.flipped(cbw), mem.write_port())
    rp = mem.read_port()
    m.d.comb += [rp.addr.eq(addr), rp.en.eq(en)]
    return rp.data


def _elaborated(component):
    """What ``elaborate`` kept for the trace taps (signals exist only once a design is elaborated,
    e.g. by constructing a ``Simulator`` of it)."""
    if not hasattr(component, "_taps"):
        raise RuntimeError(f"{type(component).__name__}: trace taps exist once the design is elaborated")
    return component._taps


class CodewordDecode(wiring.Component):
    """Codebook decode: the codewords of each beat's scalars, four per block RAM.

    The codebooks are held as a pair table (``bcq.sw.contract.tables``): a word addressed by a
    block's selector, the index of scalar ``2p`` and the high bits of scalar ``2p + 1``'s index
    holds the first scalar's codeword and both candidates for the second; a 2:1 multiplexer on
    the second index's low bit picks between those after the read. One copy of the table (one
    DP16KD in 1024 x 18 mode for Nc <= 8) serves four lanes of one operand: port A (shared by
    the write port and the lookup of lanes ``4q``, ``4q + 1``: one address, muxed by
    ``cbw.en``; writes happen while no vector is in flight) and port B (lanes ``4q + 2``,
    ``4q + 3``). That is ``B * block_len / 4`` tables per operand (rounded up).

    Parameters
    ----------
    geometry, codebooks, codebook_rom
        As for :class:`BlockDatapath`.

    Members
    -------
    en, beat, cbw
        As in :class:`BlockDatapath`; ``cbw`` writes words of the pair table.
    w_words, x_out : ``Out(data.ArrayLayout(signed(entry_bits), lanes))``
        The codewords ``cb[sel][idx]`` of the beat taken ``latency`` (= 2) enabled edges earlier
        (table read, field selection and codeword register), with the table as it was on the
        edge that took the beat. A lookup on port A taken on an edge where ``cbw.en`` is high
        reads the written address instead (the shared port): ``BCQDot``'s contract forbids that
        case.
    """

    latency = 2

    def __init__(self, geometry: BeatGeometry, *, codebooks=None, codebook_rom=False):
        config = geometry.config
        self.config, self.geometry, self.lanes = config, geometry, geometry.scalars_per_beat
        self.codebooks, self.codebook_rom = codebooks, codebook_rom
        words = data.ArrayLayout(signed(config.entry_bits), self.lanes)
        members = {"en": In(1), "beat": In(bcq_beat_layout(geometry)),
                   "w_words": Out(words), "x_out": Out(words)}
        if not codebook_rom:
            members["cbw"] = Out(pair_table_write_signature(config))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg, en, p = self.config, self.en, self.beat
        E = cfg.entry_bits
        init = pair_table_words(self.codebooks) if self.codebooks is not None else []
        depth = pair_table_depth(cfg)
        for op, out in (("w", self.w_words), ("x", self.x_out)):
            def address(j):
                """The pair table word of lanes j, j + 1 (one block: one selector)."""
                sel = [p[f"{op}_sel"][j // cfg.block_len]] if cfg.selector_bits else []
                return Cat(p[f"{op}_idx"][j + 1][1:], p[f"{op}_idx"][j], *sel)
            for t in range(0, -(-self.lanes // 4)):
                k = 4 * t
                # no_rw_check: the codebook is written while no vector is in flight (BCQDot's
                # ``cbw`` contract); without it Yosys wraps every table in read-old-data collision
                # logic (~20 LUT4 per table).
                mem = memory.Memory(shape=unsigned(pair_table_width(cfg)), depth=depth, init=init,
                                    attrs={"no_rw_check": 1})
                m.submodules[f"codebook_{op}{t}"] = mem
                ports = [(k, mem.read_port())] + ([(k + 2, mem.read_port())] if k + 2 < self.lanes else [])
                ra = ports[0][1]
                if self.codebook_rom:
                    m.d.comb += ra.addr.eq(address(k))
                else:
                    # One address signal for the write port and port A's lookup: Yosys then maps
                    # both onto the DP16KD's port A (an expression per port duplicates the table).
                    a_addr = Signal(range(depth), name=f"{op}_port_a{t}")
                    m.d.comb += a_addr.eq(Mux(self.cbw.en, self.cbw.addr, address(k)))
                    wp = mem.write_port()
                    m.d.comb += [wp.addr.eq(a_addr), wp.en.eq(self.cbw.en), wp.data.eq(self.cbw.data),
                                 ra.addr.eq(a_addr)]
                for j, rp in ports:
                    if rp is not ra:
                        m.d.comb += rp.addr.eq(address(j))
                    m.d.comb += rp.en.eq(en)
                    # The second lane's low index bit, taken with the read, picks its field.
                    low = enabled_reg(m, en, f"{op}_low{j + 1}", 1, p[f"{op}_idx"][j + 1][0])
                    first = rp.data[:E].as_signed()
                    second = Mux(low, rp.data[2 * E:3 * E], rp.data[E:2 * E]).as_signed()
                    # Codeword register: a block RAM's clock-to-output delay followed by the
                    # product chains does not fit a 50 MHz ECP5 cycle; this costs one cycle.
                    for lane, value in ((j, first), (j + 1, second)):
                        m.d.comb += out[lane].eq(enabled_reg(m, en, f"c{op}{lane}", signed(E), value))
        self._taps = {"w_codewords": (tuple(self.w_words[j] for j in range(self.lanes)), self.latency),
                      "x_codewords": (tuple(self.x_out[j] for j in range(self.lanes)), self.latency)}
        return m

    def stage_taps(self):
        """Trace taps (docs/arithmetic.md section 6), once elaborated: stage -> (values, enabled
        edges after the beat was taken)."""
        return _elaborated(self)


def plane_layout(config: BCQConfig, lanes):
    """The first-level chain outputs of :class:`ProductPlanes`: one ``signed(entry_bits + 1)``
    value per (weight bit ``b``, lane pair ``(2i, 2i + 1)``), index ``b * lanes // 2 + i``."""
    return data.ArrayLayout(signed(config.entry_bits + 1), lanes * config.entry_bits // 2)


def plane_bit(config: BCQConfig, lanes, k):
    """The weight bit of plane value ``k`` (its weight is ``2**b``, negated for the sign bit)."""
    return k // (lanes // 2)


def products_latency(config: BCQConfig, lanes):
    """Register levels of :class:`BeatProducts`: the first chain level (two lanes' partial
    products of one weight bit), then a registered balanced tree of chain adders."""
    return 1 + tree_levels(lanes * config.entry_bits // 2)


class ProductPlanes(wiring.Component):
    """First level of the product chains: for weight bit ``b`` and lanes ``2i, 2i + 1``,

        ``planes[b * lanes / 2 + i] = (w[2i][b] ? x[2i] : 0) + (w[2i+1][b] ? x[2i+1] : 0)``

    on one carry chain each (the two AND gates folded into the chain's LUTs), registered.
    ``sum_j w_j x_j = sum_k s_k * 2**b_k * planes[k]`` with ``s_k = -1`` for the weight's sign
    bit (``b = entry_bits - 1``) and +1 otherwise (two's complement; ``PlaneSum`` adds that up).

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
    lanes : int
        Codeword pairs per beat (even).
    cells : str
        As for :class:`BeatProducts`.

    Members
    -------
    en : ``In(1)``
        Advance the pipeline (the registers' clock enable).
    w_words, x_words : ``In(data.ArrayLayout(signed(entry_bits), lanes))``
        Codewords of both operands.
    planes : ``Out(plane_layout(config, lanes))``
        The plane values of the words taken on the last enabled edge.
    """

    latency = 1

    def __init__(self, config: BCQConfig, lanes, *, cells="ccu2c"):
        if cells not in MODES:
            raise ConfigError("cells", cells, MODES)
        self.config, self.lanes, self.cells = config, lanes, cells
        words = data.ArrayLayout(signed(config.entry_bits), lanes)
        super().__init__({"en": In(1), "w_words": In(words), "x_words": In(words),
                          "planes": Out(plane_layout(config, lanes))})

    def elaborate(self, platform):
        m = Module()
        cfg, x, w = self.config, self.x_words, self.w_words
        e, lo, hi = cfg.entry_bits, cfg.entry_min, cfg.entry_max
        for b in range(e):
            for i in range(self.lanes // 2):
                k = b * (self.lanes // 2) + i
                # The sign bit's terms are marked ``neg`` only so that chain_add accepts the pair;
                # two negatives add as -(|u| + |v|): the chain computes the plain sum of the gated
                # values either way, and PlaneSum applies the sign.
                u, v = (Term(x[j], lo, hi, shift=0, gate=w[j][b]) for j in (2 * i, 2 * i + 1))
                t = chain_add(m, f"pp{k}", u, v, mode=self.cells)
                m.d.comb += self.planes[k].eq(register(m, f"pp_r{k}", t.value, self.en))
        return m


class PlaneSum(wiring.Component):
    """The sum of the plane values, ``sum_k s_k * 2**b_k * planes[k]`` (see
    :class:`ProductPlanes`), on a balanced tree of carry-chain adders with a register after every
    level (the sign-bit planes are subtracted: inverted operand, carry in 1).

    Parameters
    ----------
    config, lanes, cells
        As for :class:`ProductPlanes`.

    Members
    -------
    en : ``In(1)``
        Advance the pipeline.
    planes : ``In(plane_layout(config, lanes))``
    beat_sum : ``Out(signed(block_sum_bits(lanes)))``
        The sum for the planes taken ``latency`` enabled edges earlier
        (``tree_levels(lanes * entry_bits / 2)``).
    """

    def __init__(self, config: BCQConfig, lanes, *, cells="ccu2c"):
        if cells not in MODES:
            raise ConfigError("cells", cells, MODES)
        self.config, self.lanes, self.cells = config, lanes, cells
        self.arith = Arithmetic(config)
        self.latency = tree_levels(lanes * config.entry_bits // 2)
        super().__init__({"en": In(1), "planes": In(plane_layout(config, lanes)),
                          "beat_sum": Out(signed(self.arith.block_sum_bits(lanes)))})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        e = cfg.entry_bits
        lo, hi = 2 * cfg.entry_min, 2 * cfg.entry_max
        terms = [Term(self.planes[k], lo, hi, shift=plane_bit(cfg, self.lanes, k), neg=plane_bit(cfg, self.lanes, k) == e - 1)
                 for k in range(len(self.planes))]
        log = []
        total, regs, left = pipelined_tree(m, "tree", terms, mode=self.cells, en=self.en, log=log)
        assert total.shift == 0 and not total.neg and not left and regs == self.latency
        m.d.comb += self.beat_sum.eq(total.value)
        # The tree's structure, for the proof (sim/formal_spec.py: products_harness).
        self._structure = (terms, log, total)
        return m


class BeatProducts(wiring.Component):
    """Products of ``lanes`` codeword pairs and their sum, on carry chains only (no LUT4, no DSP):
    :class:`ProductPlanes` (the AND-gated partial products of two lanes per chain) then
    :class:`PlaneSum` (a registered tree of chain adders). ``sim/formal.py`` proves each part.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
    lanes : int
        Codeword pairs per beat (even).
    cells : str
        ``"ccu2c"`` (ECP5 CCU2C instances: synthesis, Verilator), ``"model"`` (the same cells
        modelled in Amaranth: Amaranth simulator, formal) or ``"rtl"`` (plain ``&``/``+``).

    Members
    -------
    en : ``In(1)``
        Advance the pipeline.
    w_words, x_words : ``In(data.ArrayLayout(signed(entry_bits), lanes))``
        Codewords of both operands.
    beat_sum : ``Out(signed(block_sum_bits(lanes)))``
        ``sum_j w_words[j] * x_words[j]`` of the words taken ``latency`` enabled edges earlier
        (``products_latency``: 1 + ceil(log2(lanes * entry_bits / 2)), 6 for 8 lanes of INT6).
    """

    def __init__(self, config: BCQConfig, lanes, *, cells="ccu2c"):
        if cells not in MODES:
            raise ConfigError("cells", cells, MODES)
        self.config, self.lanes, self.cells = config, lanes, cells
        self.arith = Arithmetic(config)
        self.latency = products_latency(config, lanes)
        words = data.ArrayLayout(signed(config.entry_bits), lanes)
        super().__init__({"en": In(1), "w_words": In(words), "x_words": In(words),
                          "beat_sum": Out(signed(self.arith.block_sum_bits(lanes)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.planes = planes = ProductPlanes(self.config, self.lanes, cells=self.cells)
        m.submodules.plane_sum = total = PlaneSum(self.config, self.lanes, cells=self.cells)
        m.d.comb += [planes.en.eq(self.en), planes.w_words.eq(self.w_words), planes.x_words.eq(self.x_words),
                     total.en.eq(self.en), total.planes.eq(planes.planes), self.beat_sum.eq(total.beat_sum)]
        assert planes.latency + total.latency == self.latency
        # Trace tap: the products themselves exist only here (a simulator reads them; nothing in
        # the design does, so synthesis removes them).
        prods = []
        for j in range(self.lanes):
            pj = Signal(signed(self.arith.product_bits), name=f"product{j}")
            m.d.comb += pj.eq(self.w_words[j] * self.x_words[j])
            prods.append(pj)
        self._taps = {"products": (tuple(prods), 0), "beat_sums": ((self.beat_sum,), self.latency)}
        return m

    def stage_taps(self):
        """Trace taps, once elaborated: stage -> (values, enabled edges after the words)."""
        return _elaborated(self)


class BlockDatapath(wiring.Component):
    """Decode, multiply and sum the ``B * block_len`` scalar pairs of one beat.

    Parameters
    ----------
    geometry : :class:`bcq.sw.contract.geometry.BeatGeometry`
        The format and B, blocks of each operand per beat.
    codebooks : :class:`bcq.sw.formats.codebooks.Codebooks` or None
        Initial table contents (zeros if None).
    codebook_rom : bool
        Bake ``codebooks`` in (no ``cbw`` port).
    cells : str
        How the product chains are built (:class:`BeatProducts`).

    Members
    -------
    en : ``In(1)``
        The pipeline advances on a clock edge where ``en`` is high (it holds otherwise).
    beat : ``In(bcq_beat_layout(geometry))``
        Operands taken on each enabled edge; only the index and selector fields are read.
    cbw : ``Out(pair_table_write_signature(config))`` (absent with ``codebook_rom``)
        Pair table words (``bcq.sw.contract.tables``), one per cycle.
    beat_sum : ``Out(signed(block_sum_bits))``
        ``sum_j cb[w_sel(j)][w_idx[j]] * cb[x_sel(j)][x_idx[j]]`` over the beat's scalars, for
        the beat taken ``latency`` enabled edges earlier, with the table as it was on the
        edge that took the beat (a write on that same edge is not seen).

    Latency: ``latency`` enabled edges: table read, codeword register (``CodewordDecode``),
    then the product chains (``BeatProducts``; 8 for the default config). ``sim/formal.py``
    proves each part against the spec.
    """

    def __init__(self, geometry: BeatGeometry, *, codebooks: Codebooks | None = None,
                 codebook_rom=False, cells="ccu2c"):
        config = geometry.config
        self.config, self.geometry = config, geometry
        self.codebooks, self.codebook_rom, self.cells = codebooks, bool(codebook_rom), cells
        self.lanes = geometry.scalars_per_beat
        self.arith = Arithmetic(config)
        self.latency = CodewordDecode.latency + products_latency(config, self.lanes)
        members = {
            "en": In(1),
            "beat": In(bcq_beat_layout(geometry)),
            "beat_sum": Out(signed(self.arith.block_sum_bits(self.lanes))),
        }
        if not self.codebook_rom:
            members["cbw"] = Out(pair_table_write_signature(config))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.decode = dec = CodewordDecode(
            self.geometry, codebooks=self.codebooks, codebook_rom=self.codebook_rom)
        m.submodules.products = mul = BeatProducts(self.config, self.lanes, cells=self.cells)
        m.d.comb += [dec.en.eq(self.en), dec.beat.eq(self.beat), mul.en.eq(self.en),
                     mul.w_words.eq(dec.w_words), mul.x_words.eq(dec.x_out), self.beat_sum.eq(mul.beat_sum)]
        if not self.codebook_rom:
            wiring.connect(m, wiring.flipped(self.cbw), dec.cbw)
        self._taps = (dec, mul)
        return m

    def stage_taps(self):
        """Trace taps, once elaborated: stage -> (values, enabled edges after the beat was taken);
        the products see the codewords ``CodewordDecode.latency`` edges after the beat."""
        dec, mul = _elaborated(self)
        return {**dec.stage_taps(), **{name: (values, dec.latency + delay)
                                       for name, (values, delay) in mul.stage_taps().items()}}
