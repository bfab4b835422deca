"""The on-chip activation encoder: BF16 lanes in, LO-BCQ activation beats out, bit-exact with the
integer encoder specification :mod:`bcq.sw.formats.encoder_int` (docs/arithmetic.md section 7)."""


import torch
from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import activation_layout
from bcq.sw.contract.bf16_beats import float16_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.encoder_int import INPUT_FORMATS, EncoderArithmetic, nearest_entries, scale_thresholds
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.numerics import scale_code_values

from .bcq_block import codebook_write_signature
from .pipeline import registered_mult, tree_sum

__all__ = ["BCQEncoder", "NearestEntry", "lanes_to_feed"]

BF16 = INPUT_FORMATS["bf16"]


# Quotient bits per pipeline stage of the encoder's division: 14 in one stage was a 48.5 ns path
# on the ULX3S-85F (20.6 MHz, the board build's critical path); three keep a stage near 12 ns.
DIV_BITS = 3


def _signed(v):
    """``v`` (unsigned) as a signed value of one more bit: the same number."""
    return Cat(v, Const(0, 1)).as_signed()


def _argmin_levels(m, nodes, n, name, levels=None, first_level=0):
    """``levels`` levels (None: all) of a balanced tree that keeps the least key of two
    ``(key, position, value)`` nodes, the earlier node on a tie, over ``n`` leaves, levels
    numbered from ``first_level``; returns the remaining nodes, in order (so a tie still keeps
    the earlier leaf when the tree goes on from them)."""
    level = first_level
    while len(nodes) > 1 and (levels is None or level < first_level + levels):
        nxt = []
        for j in range(0, len(nodes) - 1, 2):
            (ka, ia, va), (kb, ib, vb) = nodes[j], nodes[j + 1]
            # Named signals per node: nested expressions would be re-evaluated per use.
            tag = f"{name}_l{level}_{j // 2}"
            take_b = Signal(name=f"{tag}_b")
            k = Signal.like(ka, name=f"{tag}_key") if isinstance(ka, Signal) else Signal(ka.shape(), name=f"{tag}_key")
            i = Signal(range(n), name=f"{tag}_pos")
            v = Signal(va.shape(), name=f"{tag}_val")
            m.d.comb += [take_b.eq(kb < ka),         # strictly less: a tie keeps the earlier one
                         k.eq(Mux(take_b, kb, ka)), i.eq(Mux(take_b, ib, ia)), v.eq(Mux(take_b, vb, va))]
            nxt.append((k, i, v))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes, level = nxt, level + 1
    return nodes


class NearestEntry(wiring.Component):
    """The nearest entry of one codebook to one scalar: combinational, or pipelined.

    Parameters
    ----------
    config : :class:`BCQConfig`
    n_entries : int or None
        Entries compared (None: the codebook's 16). Fewer only for the formal proof, which
        checks the same comparison tree at the real widths on a small codebook.
    latency : int
        Register stages (0: combinational). From 1, the keys (with their entries) are
        registered, and each further stage registers the tree's nodes after an equal share of
        its levels; ``index`` and ``value`` answer the inputs of ``latency`` edges before.

    Members
    -------
    t : ``In(signed(t_bits))``
        ``ceil(2 y)`` of the normalized scalar ``y`` (:attr:`EncoderArithmetic.t_bits`).
    entries : ``In(data.ArrayLayout(signed(entry_bits), 16))``
        The codebook, in index order (any order of values).
    index : ``Out(4)``
        The index of least ``|2t - 1 - 4 entry|``, the lowest such index on a tie: the float
        encoder's nearest entry of every ``y`` in ``((t-1)/2, t/2]`` (ties: the smaller value,
        then the lower index), docs/arithmetic.md section 7.
    value : ``Out(signed(entry_bits))``
        ``entries[index]``.
    """

    def __init__(self, config: BCQConfig, n_entries=None, *, latency=0):
        self.config = config
        self.arith = EncoderArithmetic(config)
        self.n_entries = config.n_entries if n_entries is None else n_entries
        if isinstance(self.n_entries, bool) or not isinstance(self.n_entries, int) or \
                not 1 <= self.n_entries <= config.n_entries:
            raise ConfigError("n_entries", n_entries, f"None or 1..{config.n_entries}")
        levels = (self.n_entries - 1).bit_length()
        if isinstance(latency, bool) or not isinstance(latency, int) or not 0 <= latency <= levels + 1:
            raise ConfigError("latency", latency, f"0..{levels + 1} (keys, then the tree's {levels} levels)")
        self.latency = latency
        super().__init__({"t": In(signed(self.arith.t_bits)),
                          "entries": In(data.ArrayLayout(signed(config.entry_bits), self.n_entries)),
                          "index": Out(config.index_bits), "value": Out(signed(config.entry_bits))})

    def elaborate(self, platform):
        m = Module()
        keys = []
        for i in range(self.n_entries):
            k = Signal(unsigned(self.arith.key_bits), name=f"key{i}")
            # 2t - 1 - 4e is odd, so two different values never tie; equal values tie.
            m.d.comb += k.eq(abs(2 * self.t - 1 - 4 * self.entries[i]))
            keys.append(k)
        n, stages = self.n_entries, self.latency
        nodes = [(k, Const(i, range(n)), v) for i, (k, v) in enumerate(zip(keys, self.entries))]
        if stages:
            nodes = self._register(m, nodes, "near_s0")
        # The tree's levels in ``latency`` (at least one) equal shares, a register between two.
        levels = (n - 1).bit_length()
        per = -(-levels // max(1, stages))
        for c in range(max(1, stages)):
            nodes = _argmin_levels(m, nodes, n, "near", levels=per, first_level=c * per)
            if c < stages - 1:
                nodes = self._register(m, nodes, f"near_s{c + 1}")
        _, index, value = nodes[0]
        m.d.comb += [self.index.eq(index), self.value.eq(value)]
        return m

    @staticmethod
    def _register(m, nodes, name):
        """The ``(key, position, value)`` nodes, registered."""
        out = []
        for j, node in enumerate(nodes):
            regs = tuple(Signal(Value.cast(x).shape(), name=f"{name}_{j}_{part}")
                         for x, part in zip(node, ("key", "pos", "val")))
            m.d.sync += [r.eq(x) for r, x in zip(regs, node)]
            out.append(regs)
        return out


def lanes_to_feed(layout, max_rows):
    """The narrowest encoder (scalars per cycle) that keeps a matrix-vector engine fed.

    The engine (:class:`bcq.hw.gemv.GEMV`) reuses one activation vector of N scalars for every
    group of R rows: it computes for ``ceil(M / R) * N / (B * Lb)`` cycles per vector of a matrix
    of M rows. Encoding the next vector in that time needs ``N / cycles = B * Lb / ceil(M / R)``
    scalars per cycle, rounded up to a width the encoder takes (a divisor of ``B * Lb`` that
    divides ``Lb`` or is a multiple of it). At the ULX3S engine's full 256 rows (16 rows, B = 2,
    Lb = 8) that is 16 / 16 = 1 scalar per cycle, the same rate at which the engine's drain
    produces the previous layer's outputs (R results every ``N / (B * Lb)`` cycles, at most 1 per
    cycle for N >= 256), which is where an on-chip encoder's input comes from. (The engine's
    activation loader takes a vector only between runs, so a narrow encoder's vector load, N /
    lanes cycles, adds to the run instead of overlapping it until the loader is double-buffered.)

    Parameters
    ----------
    layout : :class:`bcq.sw.contract.image_layout.EngineLayout`
        The engine's rows R, blocks per cycle B and format (Lb).
    max_rows : int
        M, the matrix's rows.
    """
    width = layout.geometry.scalars_per_beat
    need = -(-width // -(-max_rows // layout.lanes))
    return min(w for w in _lane_options(layout.config.block_len, width) if w >= need)


def _lane_options(block_len, width):
    return [w for w in range(1, width + 1) if width % w == 0 and (block_len % w == 0 or w % block_len == 0)]


class BCQEncoder(wiring.Component):
    """LO-BCQ activation encoder: a stream of BF16 beats in, the engine's activation beats out.

    Parameters
    ----------
    config : :class:`BCQConfig`
        The format (array scale format and ``scale_rule``, Lb, LA, Nc, entry width).
    blocks_per_cycle : int
        B: blocks per output beat (``BeatGeometry``: the engine's activation beat).
    lanes : int or None
        Scalars per input beat and cycle: a divisor of ``B * Lb`` that divides ``Lb`` or is a
        multiple of it (None: ``B * Lb``, one output beat per input beat). An engine that reuses
        each vector for many rows needs few (:func:`lanes_to_feed`); the datapath's size is
        proportional to it.
    codebooks : :class:`Codebooks` or None
        Initial codebook contents (zeros if None); ``cbw`` rewrites them at run time.

    Members
    -------
    i : ``In(stream.Signature(float16_layout(lanes)))``
        BF16 patterns, ``lanes`` per beat, ``last`` on a vector's final beat. A vector is a
        multiple of ``array_len`` scalars. (A ``last`` inside an array ends the array, its block
        and its output beat there: the scale code is that of the array padded with zeros, the
        selector counts the scalars received, index positions past ``last`` are 0.)
    o : ``Out(stream.Signature(activation_layout(geometry)))``
        The encoded beats (indices, selectors, the array's scale code, ``last``), one per
        ``B * Lb / lanes`` input beats, in order.
    ts_exp : ``In(signed(8))``
        The tensor scale is ``2**ts_exp``; hold it while a vector is in flight.
    cbw : ``Out(codebook_write_signature(config))``
        Codebook write port, the engine's signature: entry ``addr = selector * 16 + index``
        gets ``data``. Write while no vector is in flight. After the last write the encoder
        rebuilds its nearest-entry table for ``fill_cycles`` cycles (``i.ready`` low).
    busy : ``Out(1)``
        The nearest-entry table is being rebuilt.

    How the search is cheap: the scale code is a pipelined binary search over the increasing
    thresholds (``scale_stages`` comparators, not one per threshold). The nearest entry of a scalar depends only on ``t = ceil(2 y)``
    (``t_bits`` wide) and the codebook, so after codebook writes one :class:`NearestEntry`
    walks every ``(t, codebook)`` and fills a table ``t -> (index, entry)`` of every codebook
    (a block RAM, one read port per lane); per scalar the search is then one table read. The
    block error is compared without the ``Y**2`` term common to every codebook (docs section 7):
    one ``entry x (entry * 2**F - 2 Y)`` product per lane and codebook, accumulated over the
    ``Lb / lanes`` beats of a block; the selector is one argmin per block.

    Throughput one input beat per cycle (II = 1) without back-pressure. Latency: ``latency``
    cycles from the clock edge that accepts an array's final beat to ``o.valid`` of its first
    output beat (the array must be whole before its scale is known), with ``o.ready`` high; a
    FIFO of ``fifo_depth`` input beats holds one array while the next arrives.
    """

    @property
    def base_latency(self):
        """Cycles from accepting an array's final beat to the output of a one-beat output beat:
        input register (1), array maximum register (1), the scale code (``scale_stages``), code into its FIFO (1),
        FIFO read-out (2); then the heads' register, align (2: the shift amounts, the shift),
        divide (``div_stages``), ``t`` and table read, its register, the error terms (2: the
        multiplier's input and output registers), block error, the selector tree (``sel_stages``), output beat
        register, output queue (1)."""
        return 14 + self.scale_stages + self.div_stages + self.sel_stages

    @property
    def sel_stages(self):
        """Register stages of the selector's tree of least block error: one level each, the
        last included (at least one stage, for ``Nc = 1``). With the last level's compare
        in the stage that writes the output beat, its result crossed the die to the beat's
        register (17.1 ns, the worst path of a 256-MAC ULX3S build at 58.4 MHz)."""
        return max(1, (self.config.n_codebooks - 1).bit_length())

    @property
    def div_stages(self):
        """Pipeline stages of the division ``Y = floor(num / mant)``: ``DIV_BITS`` quotient bits
        (a 5-bit compare and subtract each) per stage, then one that saturates the quotient into
        ``Y``'s register; one stage (``Y``'s register) without a scale mantissa."""
        if not self.config.scale.mant_bits:
            return 1
        return -(-self.arith.y_bits // DIV_BITS) + 1

    def __init__(self, config: BCQConfig, *, blocks_per_cycle=1, lanes=None, codebooks: Codebooks | None = None):
        if not isinstance(config, BCQConfig):
            raise ConfigError("config", type(config).__name__, "a BCQConfig")
        if codebooks is not None and codebooks.config != config:
            raise ConfigError("codebooks", codebooks.config.describe(), f"codebooks for {config.describe()}")
        self.config = config
        self.geometry = BeatGeometry(config, blocks_per_cycle)
        width = self.geometry.scalars_per_beat
        options = _lane_options(config.block_len, width)
        if lanes is None:
            lanes = width
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes not in options:
            raise ConfigError("lanes", lanes, f"one of {', '.join(map(str, options))} (divides B * Lb = {width} "
                              f"and divides or is a multiple of block_len={config.block_len})")
        self.lanes = lanes
        self.arith = EncoderArithmetic(config)
        self.codebooks = codebooks
        super().__init__({"i": In(stream.Signature(float16_layout(lanes))),
                          "o": Out(stream.Signature(activation_layout(self.geometry))),
                          "ts_exp": In(signed(8)),
                          "cbw": Out(codebook_write_signature(config)),
                          "busy": Out(1)})

    @property
    def beats_per_output(self):
        """Input beats per output beat: ``B * Lb / lanes``."""
        return self.geometry.scalars_per_beat // self.lanes

    @property
    def latency(self):
        """Cycles from accepting an array's final beat to its first output beat: ``base_latency``
        plus the ``beats_per_output - 1`` further input beats that output beat collects."""
        return self.base_latency + self.beats_per_output - 1

    @property
    def fifo_depth(self):
        """Input beats buffered: two arrays and the cycles the scale code takes."""
        return 2 * self.config.array_len // self.lanes + 4 + self.scale_stages

    @property
    def fill_cycles(self):
        """Cycles to rebuild the nearest-entry table after a codebook write: ``2**t_bits * Nc``
        plus the fill's pipeline (``FILL_LATENCY``)."""
        return (1 << self.arith.t_bits) * self.config.n_codebooks + self.FILL_LATENCY

    def table(self):
        """The nearest-entry table's words for the initial codebooks (what the fill computes):
        at address ``t mod 2**t_bits``, per codebook ``c`` bits ``[c*W, (c+1)*W)`` = index, then
        entry (``W = index_bits + entry_bits``), from the specification's ``nearest_entries``."""
        cfg, tb = self.config, self.arith.t_bits
        entries = (self.codebooks.entries if self.codebooks is not None
                   else torch.zeros(cfg.n_codebooks, cfg.n_entries, dtype=torch.int64)).to(torch.int64)
        t = torch.arange(1 << tb, dtype=torch.int64)
        t = torch.where(t >= 1 << (tb - 1), t - (1 << tb), t)
        idx = nearest_entries(t, entries)                                    # [2**tb, Nc]
        val = entries[torch.arange(cfg.n_codebooks), idx] & ((1 << cfg.entry_bits) - 1)
        w = cfg.index_bits + cfg.entry_bits
        words = [0] * (1 << tb)
        for a in range(1 << tb):
            word = 0
            for c in range(cfg.n_codebooks):
                word |= (int(idx[a, c]) | int(val[a, c]) << cfg.index_bits) << (c * w)
            words[a] = word
        return words

    # -- pieces ---------------------------------------------------------------------------------

    def _magnitude(self, m, bits, name):
        """The sign-cleared pattern with Inf -> the largest finite value and NaN -> 0."""
        f = BF16
        mag = Signal(15, name=name)
        special = bits[f.man_bits:15] == f.exp_all_ones
        nan = special & (bits[:f.man_bits] != 0)
        m.d.comb += mag.eq(Mux(nan, 0, Mux(special, f.mag_max_finite, bits[:15])))
        return mag

    def _split(self, mag):
        """``(m, e_field)``: the integer significand and the biased exponent field (value
        ``m * 2**(max(e_field, 1) - 1 + e_min)``)."""
        f = BF16
        e_field = mag[f.man_bits:15]
        m = Cat(mag[:f.man_bits], e_field != 0)
        return m, e_field

    # Stages that align the array maximum to the thresholds' fixed point: its exponent less the
    # tensor scale's, then the shift (with the first comparison in the same stage: 16 ns).
    SCALE_ALIGN_STAGES = 2

    @property
    def scale_stages(self):
        """Pipeline stages of the scale code: ``SCALE_ALIGN_STAGES``, then the binary search's
        ``T.bit_length()`` for the ``T`` thresholds of :func:`scale_thresholds` (7 for E4M3, 4
        for E8M0 at ``e8m0_min_exp=-12``)."""
        return self.SCALE_ALIGN_STAGES + len(scale_thresholds(self.config)).bit_length()

    def _scale_code(self, m, amag, ts_exp, start):
        """The scale code of an array of largest magnitude ``amag`` (a register, new when
        ``start``): ``encoder_int.array_scale_codes``' count of thresholds below ``amax / ts``, on
        a fixed-point ``amax / 2**ts_exp`` with a sticky bit. The thresholds increase, so the count
        is found by a binary search, one comparator per pipeline stage (``scale_stages``) rather
        than one per threshold (126 for E4M3: ~2000 carry cells). Returns ``(code, valid)``."""
        cfg, f = self.config, BF16
        th = scale_thresholds(cfg)
        unit_exp = th[0][1]                        # every threshold is num * 2**unit_exp
        nums = [n for n, _ in th]
        nb = max(nums).bit_length()
        ma0, e_field = self._split(amag)
        # Alignment stage 1: A = ma * 2**g in threshold units, g = e - ts_exp - unit_exp.
        g, ma = Signal(signed(12), name="scale_g"), Signal(len(ma0), name="scale_ma")
        v_g = Signal(name="scale_v_g")
        m.d.sync += [g.eq(_signed(Mux(e_field == 0, 1, e_field)) - 1 + f.e_min - ts_exp - unit_exp), ma.eq(ma0),
                     v_g.eq(start)]
        # Alignment stage 2 (registered below, as the search's input): the fixed-point A.
        a_fix = Signal(nb + f.man_bits + 1, name="scale_afix")
        sticky = Signal(name="scale_sticky")
        over = Signal(name="scale_over")
        width = f.man_bits + 1
        m.d.comb += over.eq((g >= nb) & (ma != 0))
        with m.If(g >= 0):
            m.d.comb += a_fix.eq(ma << g.as_unsigned()[:max(1, nb.bit_length())])
        with m.Elif(g > -width):
            rs = Signal(range(width), name="scale_rshift")
            m.d.comb += [rs.eq(-g), a_fix.eq(ma >> rs), sticky.eq((ma & ~(Const((1 << width) - 1, width) << rs)[:width]) != 0)]
        with m.Else():
            m.d.comb += sticky.eq(ma != 0)
        aligned = [Signal.like(a_fix, name="scale_a0"), Signal(name="scale_st0"), Signal(name="scale_ov0"), Signal(name="scale_v0")]
        m.d.sync += [r.eq(x) for r, x in zip(aligned, (a_fix, sticky, over, v_g))]
        stages = self.scale_stages - self.SCALE_ALIGN_STAGES
        # Stage k knows the count's top k bits (lo) and tests threshold (2 lo + 1) * 2**(stages-k-1) - 1;
        # past the last threshold the probe is "not below" (a flag beside the constant).
        lo, (a, st, ov, v) = Const(0, 1), aligned
        for k in range(stages):
            probe = [((2 * j + 1) << (stages - k - 1)) - 1 for j in range(1 << k)]
            rom = Array(Const((nums[i] << 1 | 1) if i < len(nums) else 0, nb + 1) for i in probe)
            entry = Signal(nb + 1, name=f"scale_th{k}")
            m.d.comb += entry.eq(rom[lo] if k else rom[0])
            n, real = entry[1:], entry[0]
            below = real & (ov | (n < a) | ((a == n) & st) if cfg.scale_rule == "ceil" else real & (ov | (n <= a)))
            nxt = [Signal(k + 1, name=f"scale_lo{k + 1}"), Signal.like(a_fix, name=f"scale_a{k + 1}"),
                   Signal(name=f"scale_st{k + 1}"), Signal(name=f"scale_ov{k + 1}"), Signal(name=f"scale_v{k + 1}")]
            m.d.sync += [nxt[0].eq(Cat(below, lo) if k else below), nxt[1].eq(a), nxt[2].eq(st), nxt[3].eq(ov),
                         nxt[4].eq(v)]
            lo, a, st, ov, v = nxt
        first, _ = scale_code_values(cfg.scale)
        return lo + first, v

    def _decode_scale(self, code):
        """``(mant, exp)`` of a scale code (as ``numerics.scale_decode``)."""
        fmt = self.config.scale
        if fmt.name == "e4m3":
            e, mm = code[3:7], code[:3]
            mant = Mux(e != 0, Cat(mm, Const(1, 1)), mm)
            exp = _signed(Mux(e != 0, e, 1)) - 10
            return mant, exp
        return Const(1, 1), _signed(code) - 127

    # -- the component ------------------------------------------------------------------------

    # The fill's pipeline: the codebook's entries registered before the nearest-entry search, its
    # result registered after (in one cycle, the search was the encoder's critical path: 23.8 ns),
    # and the search itself over ``FILL_SEARCH_LATENCY`` stages (in one, 19.6 ns: 51 MHz).
    FILL_SEARCH_LATENCY = 2
    FILL_LATENCY = 2 + FILL_SEARCH_LATENCY

    def _fill(self, m, cb):
        """The nearest-entry table and its fill: after any codebook write, one NearestEntry walks
        every ``(t, codebook)`` (codebooks inner, their results shifted into one word), through a
        pipeline of ``FILL_LATENCY`` registers. Returns the table and the busy signal (the walk or
        its pipeline not finished)."""
        cfg, ar, nc = self.config, self.arith, self.config.n_codebooks
        w = cfg.index_bits + cfg.entry_bits
        m.submodules.table = table = memory.Memory(shape=unsigned(nc * w), depth=1 << ar.t_bits, init=self.table(),
                                                   attrs={"no_rw_check": 1})
        m.submodules.fill_near = ne = NearestEntry(cfg, latency=self.FILL_SEARCH_LATENCY)
        fill_t = Signal(ar.t_bits, name="fill_t")
        fill_c = Signal(range(nc), name="fill_c")
        row = Signal(nc * w, name="fill_row")
        dirty = Signal(name="fill_dirty")
        cbs = Array(Array(cb[c * 16 + i] for i in range(cfg.n_entries)) for c in range(nc))
        # Stage A: the walk's position and the codebook's entries; then the search's stages;
        # stage B: the nearest entry. A codebook write cancels every step in flight.
        a_valid = Signal(name="fill_a_valid")
        a_t = Signal(ar.t_bits, name="fill_a_t")
        a_last = Signal(name="fill_a_last")    # the row's last codebook
        a_entries = Signal(data.ArrayLayout(signed(cfg.entry_bits), cfg.n_entries), name="fill_a_entries")
        b_new = Signal(w, name="fill_b_new")
        busy = Signal(name="fill_busy")
        m.d.comb += [ne.t.eq(a_t.as_signed())] + [ne.entries[i].eq(a_entries[i]) for i in range(cfg.n_entries)]
        steps = [(a_valid, a_t, a_last)]
        for k in range(ne.latency + 1):
            tag = "b" if k == ne.latency else f"s{k}"
            nxt = (Signal(name=f"fill_{tag}_valid"), Signal(ar.t_bits, name=f"fill_{tag}_t"), Signal(name=f"fill_{tag}_last"))
            m.d.sync += [nxt[0].eq(steps[-1][0] & ~self.cbw.en), nxt[1].eq(steps[-1][1]), nxt[2].eq(steps[-1][2])]
            steps.append(nxt)
        b_valid, b_t, b_last = steps[-1]
        wp = table.write_port()
        m.d.comb += [wp.addr.eq(b_t), wp.data.eq(Cat(row[w:], b_new)), wp.en.eq(b_valid & b_last),
                     busy.eq(dirty | Cat(*(v for v, _, _ in steps)).any()), self.busy.eq(busy)]
        m.d.sync += [a_valid.eq(dirty & ~self.cbw.en), a_t.eq(fill_t), a_last.eq(fill_c == nc - 1),
                     b_new.eq(Cat(ne.index, ne.value))]
        m.d.sync += [a_entries[i].eq(cbs[fill_c][i]) for i in range(cfg.n_entries)]
        with m.If(b_valid):
            m.d.sync += row.eq(Cat(row[w:], b_new))
        with m.If(self.cbw.en):
            m.d.sync += [dirty.eq(1), fill_t.eq(0), fill_c.eq(0)]
        with m.Elif(dirty):
            with m.If(fill_c == nc - 1):
                m.d.sync += [fill_c.eq(0), fill_t.eq(fill_t + 1)]
                with m.If(fill_t == (1 << ar.t_bits) - 1):
                    m.d.sync += dirty.eq(0)
            with m.Else():
                m.d.sync += fill_c.eq(fill_c + 1)
        return table, busy

    def elaborate(self, platform):
        m = Module()
        cfg, geo, ar, f = self.config, self.geometry, self.arith, BF16
        lanes, lb, nc = self.lanes, cfg.block_len, cfg.n_codebooks
        B, P = geo.blocks_per_cycle, self.beats_per_output
        per_array = cfg.array_len // lanes
        slots, width = max(1, lanes // lb), min(lanes, lb)      # blocks per input beat, their lanes
        per_block = lb // width                                  # input beats per block
        w = cfg.index_bits + cfg.entry_bits

        # Codebook registers: read only by the table fill.
        init = self.codebooks.entries.flatten().tolist() if self.codebooks is not None else [0] * (nc * 16)
        cb = [Signal(signed(cfg.entry_bits), name=f"cb{a}", init=init[a]) for a in range(nc * 16)]
        # Each register decodes its own address: an Array on the left-hand side (or one Switch)
        # becomes a Verilog process per register, each with a case over every address
        # (O(entries**2) text, which made the encoder most of a board top's simulation build).
        for a in range(nc * 16):
            with m.If(self.cbw.en & (self.cbw.addr == a)):
                m.d.sync += cb[a].eq(self.cbw.data)
        table, dirty = self._fill(m, cb)

        # -- input side: buffer beats, track the array maximum, compute the scale code ---------
        beat_fifo = fifo.SyncFIFOBuffered(width=16 * lanes + 2, depth=self.fifo_depth)
        scale_fifo = fifo.SyncFIFOBuffered(width=8, depth=2 * cfg.array_len // lanes + 6 + self.scale_stages)
        m.submodules.beat_fifo, m.submodules.scale_fifo = beat_fifo, scale_fifo

        # The input beat, registered where it enters (on the board it comes from the host link,
        # across the die: its valid logic, this magnitude and the running maximum were one 18.7 ns
        # path), then into the beat FIFO while the array maximum is tracked.
        in_valid, in_last = Signal(name="in_valid"), Signal(name="in_last")
        in_data = Signal(16 * lanes, name="in_data")
        push = Signal(name="in_push")
        m.d.comb += [push.eq(in_valid & beat_fifo.w_rdy), self.i.ready.eq((~in_valid | push) & ~dirty)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [in_valid.eq(1), in_data.eq(self.i.p.data.as_value()), in_last.eq(self.i.p.last)]
        with m.Elif(push):
            m.d.sync += in_valid.eq(0)
        count = Signal(range(per_array), name="beat_in_array")
        run_max = Signal(15, name="run_max")
        end = Signal(name="array_end")
        mags = [self._magnitude(m, in_data[16 * j:16 * (j + 1)], f"mag{j}") for j in range(lanes)]
        beat_max = mags[0]
        for mg in mags[1:]:
            beat_max = Mux(mg > beat_max, mg, beat_max)
        new_max = Signal(15, name="new_max")
        m.d.comb += [new_max.eq(Mux(beat_max > run_max, beat_max, run_max)),
                     end.eq((count == per_array - 1) | in_last),
                     beat_fifo.w_en.eq(push),
                     beat_fifo.w_data.eq(Cat(in_data, in_last, end))]
        done = Signal(name="array_done")
        amax = Signal(15, name="array_max")
        m.d.sync += done.eq(0)
        with m.If(push):
            with m.If(end):
                m.d.sync += [count.eq(0), run_max.eq(0), amax.eq(new_max), done.eq(1)]
            with m.Else():
                m.d.sync += [count.eq(count + 1), run_max.eq(new_max)]
        code_in = Signal(8, name="scale_code_in")
        code, code_valid = self._scale_code(m, amax, self.ts_exp, done)
        m.d.comb += [code_in.eq(code), scale_fifo.w_en.eq(code_valid), scale_fifo.w_data.eq(code_in)]

        # -- datapath: a global-enable pipeline fed from the FIFO heads -----------------------
        # The pipeline advances on a register (see the output queue at the end): computed from
        # ``o.ready`` on the spot, the enable of every stage ran from the consumer's handshake
        # through one LUT to thousands of clock enables (13.2 ns in a routed 256-MAC ULX3S build).
        en = Signal(name="advance", init=1)
        head_ok = Signal(name="head_ok")
        m.d.comb += head_ok.eq(beat_fifo.r_rdy & scale_fifo.r_rdy & ~dirty)
        head_end = beat_fifo.r_data[16 * lanes + 1]
        head_last = beat_fifo.r_data[16 * lanes]
        m.d.comb += [beat_fifo.r_en.eq(en & head_ok), scale_fifo.r_en.eq(en & head_ok & head_end)]

        def reg(name, shape, value, init=0):
            r = Signal(shape, name=name, init=init)
            with m.If(en):
                m.d.sync += r.eq(value)
            return r

        # Position of the head beat in its output beat (restarts after ``last``); at least one
        # bit wide (a zero-width net is an ascending [-1:0] range in Verilog).
        pos_shape = range(max(2, P))

        def ctl(tag, valid, last, pos, code):
            """A beat's controls, one stage later: valid, ``last``, its position in the output
            beat, its array's scale code."""
            return (reg(f"v{tag}", 1, valid), reg(f"last{tag}", 1, last), reg(f"pos{tag}", pos_shape, pos),
                    reg(f"code{tag}", 8, code))

        pos = Signal(pos_shape, name="out_pos")
        with m.If(en & head_ok):
            m.d.sync += pos.eq(Mux((pos == P - 1) | head_last, 0, pos + 1))

        # Stage H: the FIFO heads, registered as they leave the block RAMs (5.8 ns from clock to
        # data), with the scale's part of each scalar's alignment shift. Stage 0: the magnitudes
        # and the shifts; stage 1: the shift itself. (The block RAM's data, the magnitude, the
        # exponent arithmetic and the shift were one 21 ns stage; without the head register the
        # first two stages still made 19 ns.)
        code = scale_fifo.r_data
        s_mant, s_exp = self._decode_scale(code)
        vh, lasth, posh, codeh = ctl("h", head_ok, head_last, pos, code)
        manth = reg("manth", 4, s_mant)
        bitsh = reg("bitsh", 16 * lanes, beat_fifo.r_data[:16 * lanes])
        # shift = max(e_field, 1) + base: the scalar's exponent less the scale's, in frac_bits units.
        baseh = reg("shift_base", signed(12), f.e_min - 1 - s_exp - self.ts_exp + ar.frac_bits)
        v0, last0, pos0, code0 = ctl("0", vh, lasth, posh, codeh)
        mant0 = reg("mant0", 4, manth)
        sh_max = ar.y_bits + 4                      # m >= 1 shifted this far saturates Y
        n_bits = f.man_bits + 1 + sh_max
        mw = f.man_bits + 1
        mx0, sh0, neg0 = [], [], []
        for j in range(lanes):
            bits = bitsh[16 * j:16 * (j + 1)]
            mx, e_field = self._split(self._magnitude(m, bits, f"mag_o{j}"))
            sh = Signal(signed(12), name=f"sh{j}")
            m.d.comb += sh.eq(_signed(Mux(e_field == 0, 1, e_field)) + baseh)
            mx0.append(reg(f"mx0_{j}", mw, mx))
            sh0.append(reg(f"sh0_{j}", signed(12), sh))
            neg0.append(reg(f"neg0_{j}", 1, bits[15]))

        v1, last1, pos1, code1 = ctl("1", v0, last0, pos0, code0)
        mant1 = reg("mant1", 4, mant0)
        neg1, num1, lost1, sat1 = [], [], [], []
        for j in range(lanes):
            mx, sh = mx0[j], sh0[j]
            num = Signal(n_bits, name=f"num{j}")
            lost = Signal(name=f"lost{j}")
            with m.If(sh >= 0):
                m.d.comb += num.eq(mx << sh.as_unsigned()[:sh_max.bit_length()])
            with m.Elif(sh > -mw):
                rs = Signal(range(mw), name=f"rs{j}")
                m.d.comb += [rs.eq(-sh), num.eq(mx >> rs),
                             lost.eq((mx & ~(Const((1 << mw) - 1, mw) << rs)[:mw]) != 0)]
            with m.Else():
                m.d.comb += lost.eq(mx != 0)
            neg1.append(reg(f"neg1_{j}", 1, neg0[j]))
            num1.append(reg(f"num1_{j}", n_bits, num))
            lost1.append(reg(f"lost1_{j}", 1, lost))
            sat1.append(reg(f"sat1_{j}", 1, (sh > sh_max) & (mx != 0)))

        # Stage 2: Y = floor(num / mant), restoring division (the remainder stays below mant),
        # DIV_BITS quotient bits per pipeline stage (``div_stages - 1`` stages, then Y's register).
        v2, last2, pos2, code2 = v1, last1, pos1, code1
        ys2, sticky2, neg2 = [], [], []
        if cfg.scale.mant_bits:
            # Per lane: the remainder, the quotient bits so far, the dividend bits still to come.
            rem = [num1[j][ar.y_bits:] for j in range(lanes)]
            sat = [Signal(name=f"dsat{j}") for j in range(lanes)]
            m.d.comb += [sat[j].eq(sat1[j] | (num1[j][ar.y_bits:] >= mant1)) for j in range(lanes)]
            quot = [Const(0, 0) for _ in range(lanes)]
            low, lost, neg, mant = list(num1), list(lost1), list(neg1), mant1
            ks = list(reversed(range(ar.y_bits)))
            for d in range(self.div_stages - 1):
                step = ks[d * DIV_BITS:(d + 1) * DIV_BITS]
                for j in range(lanes):
                    r = rem[j]
                    qbits = []
                    for k in step:
                        rr = Signal(5, name=f"div{j}_r{k}")      # 2r + next bit (r < mant <= 15)
                        ge = Signal(name=f"div{j}_q{k}")
                        m.d.comb += [rr.eq(Cat(low[j][k], r[:4])), ge.eq(rr >= mant)]
                        qbits.append(ge)
                        r = Signal(4, name=f"div{j}_rem{k}")
                        m.d.comb += r.eq(Mux(ge, rr - mant, rr))
                    q = Cat(*reversed(qbits), quot[j])
                    rem[j], quot[j] = reg(f"rem2_{d}_{j}", 4, r), reg(f"quot2_{d}_{j}", len(q), q)
                    low[j] = reg(f"low2_{d}_{j}", step[-1], low[j][:step[-1]]) if step[-1] else low[j]
                    sat[j] = reg(f"dsat2_{d}_{j}", 1, sat[j])
                    lost[j], neg[j] = reg(f"lost2_{d}_{j}", 1, lost[j]), reg(f"neg2_{d}_{j}", 1, neg[j])
                mant = reg(f"mant2_{d}", 4, mant)
                v2, last2, pos2, code2 = ctl(f"2_{d}", v2, last2, pos2, code2)
            # The quotient saturated into registers of its own: the last division stage's
            # compare, this multiplexer and the ``t`` adder in one cycle into the table's address
            # made 13.8 ns (the worst path of a routed 256-MAC ULX3S build at 72.3 MHz).
            zero = mant == 0
            v2, last2, pos2, code2 = ctl("2y", v2, last2, pos2, code2)
            for j in range(lanes):
                ys2.append(reg(f"y2_{j}", ar.y_bits, Mux(zero, 0, Mux(sat[j], ar.y_max, quot[j]))))
                sticky2.append(reg(f"sticky2_{j}", 1, ~zero & (sat[j] | lost[j] | (rem[j] != 0))))
                neg2.append(reg(f"neg2_{j}", 1, neg[j]))
        else:
            v2, last2, pos2, code2 = ctl("2", v1, last1, pos1, code1)
            for j in range(lanes):
                num = num1[j]
                y = Signal(ar.y_bits, name=f"y{j}")
                sticky = Signal(name=f"sticky{j}")
                sat = Signal(name=f"dsat{j}")
                m.d.comb += sat.eq(sat1[j] | (num[ar.y_bits:] != 0))
                m.d.comb += [y.eq(Mux(sat, ar.y_max, num[:ar.y_bits])), sticky.eq(sat | lost1[j])]
                ys2.append(reg(f"y2_{j}", ar.y_bits, y))
                sticky2.append(reg(f"sticky2_{j}", 1, sticky))
                neg2.append(reg(f"neg2_{j}", 1, neg1[j]))

        # Stage 3: t = ceil(2y), the table read (its read register is this stage's register).
        v3, last3, pos3, code3 = ctl("3", v2, last2, pos2, code2)
        half = ar.frac_bits - 1
        rows3, ysg3 = [], []
        for j in range(lanes):
            y = ys2[j]
            t = Signal(signed(ar.t_bits), name=f"t{j}")
            floor2 = y[half:]
            inexact = (y[:half] != 0) | sticky2[j]
            m.d.comb += t.eq(Mux(neg2[j], -floor2, floor2 + inexact))
            rp = table.read_port()
            m.d.comb += [rp.addr.eq(t.as_unsigned()), rp.en.eq(en)]
            rows3.append(rp.data)
            ysg3.append(reg(f"ys3_{j}", signed(ar.y_bits + 1), Mux(neg2[j], -y, y)))

        # Stage 3r: the table's read data, registered as it leaves the block RAM (5.6 ns from clock
        # to data; with the error terms' multipliers and the block's sum behind it, 18 ns).
        v3r, last3r, pos3r, code3r = ctl("3r", v3, last3, pos3, code3)
        rows3r = [reg(f"rows3r_{j}", len(rows3[j]), rows3[j]) for j in range(lanes)]
        # The error term's second factor, e * 2**F - 2 Y, computed as the read data leaves the
        # block RAM and registered there: the multiplier's input register then takes it straight
        # from a flip-flop (its adder in front of the multiplier, across the die to the DSP
        # column, made 16.8 ns in a routed 256-MAC ULX3S build).
        diffs = [[(rows3[j][c * w + cfg.index_bits:(c + 1) * w].as_signed() << ar.frac_bits) - (ysg3[j] << 1)
                  for c in range(nc)] for j in range(lanes)]
        # |e * 2**F| < 2**(y_bits - 1) and |2 Y| < 2**(y_bits + 1): y_bits + 3 signed bits hold it
        # (Amaranth's width of the expression is wider), so the product fits one MULT18X18D.
        diff3r = [[reg(f"diff3r_{j}_{c}", signed(ar.y_bits + 3), d) for c, d in enumerate(row)]
                  for j, row in enumerate(diffs)]
        # Stages 3a, 3p: per lane and codebook, the error term e (e * 2**F - 2 Y): its factors into
        # the multiplier's input registers, the product into its output register (on ECP5 a
        # MULT18X18D's own; with neither, its inputs' adder, the multiplier and the routes in
        # and out made 16 ns, the worst path of a routed 256-MAC ULX3S build at 62.3 MHz).
        v3a, last3a, pos3a, code3a = ctl("3a", v3r, last3r, pos3r, code3r)
        v3p, last3p, pos3p, code3p = ctl("3p", v3a, last3a, pos3a, code3a)
        idx3, term3 = [], []
        for j in range(lanes):
            idx3.append([reg(f"idx3p_{j}_{c}", cfg.index_bits,
                             reg(f"idx3a_{j}_{c}", cfg.index_bits, rows3r[j][c * w:c * w + cfg.index_bits]))
                         for c in range(nc)])
            terms = []
            for c in range(nc):
                e, diff = rows3r[j][c * w + cfg.index_bits:(c + 1) * w].as_signed(), diff3r[j][c]
                terms.append(registered_mult(m, f"term3_{j}_{c}", e, diff, len(e), len(diff), platform, ce=en))
            term3.append(terms)

        # Stage 4: per block slot and codebook, the error without the common sum of Y**2:
        # sum_j e (e * 2**F - 2 Y_j) (err = 2**F * this + sum_j Y_j**2), accumulated over the
        # block's beats; the block's indices of every codebook shift in beside it.
        v4, last4, pos4, code4 = ctl("4", v3p, last3p, pos3p, code3p)
        first3 = (pos3p % per_block == 0) if per_block > 1 else Const(1, 1)
        acc_bits = 2 * ar.y_bits + 3 + (lb - 1).bit_length()    # |e (e 2^F - 2Y)| < 2^(2 y_bits + 2)
        err4, store4 = [], []
        for s in range(slots):
            errs, stores = [], []
            for c in range(nc):
                terms = [term3[j][c] for j in range(s * width, (s + 1) * width)]
                acc = Signal(signed(acc_bits), name=f"err4_{s}_{c}")
                with m.If(en & v3p):
                    m.d.sync += acc.eq(Mux(first3, 0, acc) + tree_sum(terms))
                errs.append(acc)
                st = [Signal(cfg.index_bits, name=f"idx4_{s}_{c}_{k}") for k in range(lb)]
                with m.If(en & v3p):
                    m.d.sync += [st[k].eq(st[k + width]) for k in range(lb - width)]
                    m.d.sync += [st[lb - width + jj].eq(idx3[s * width + jj][c]) for jj in range(width)]
                stores.append(st)
            err4.append(errs)
            store4.append(stores)

        # Stages 5: at a block's end, each slot's tree of least error (the lower codebook on a
        # tie), one level per stage (``sel_stages``: two levels of wide compares in one stage
        # made 15 ns), each node registered with its block indices.
        block_end4 = ((pos4 % per_block == per_block - 1) | last4) if per_block > 1 else Const(1, 1)
        out_end4 = (pos4 == P - 1) | last4
        take5, out5 = v4 & block_end4, v4 & block_end4 & out_end4
        code5, last5 = code4, last4
        base5 = pos4 // per_block * slots if per_block > 1 else pos4 * slots
        # (key, position, value): the value is the codebook number with the block's indices in
        # it, so each level halves the indices carried on (rather than every codebook's indices
        # through every stage) and the last level picks between two (rather than an Nc:1
        # multiplexer after the last compare: 13.9 ns of logic into the output beat).
        cbits = Shape.cast(range(nc)).width
        cand5 = [[(err4[s][c], Const(c, range(nc)), Cat(Const(c, range(nc)), *store4[s][c])) for c in range(nc)]
                 for s in range(slots)]
        levels = (nc - 1).bit_length()
        for d in range(self.sel_stages):
            take5, out5 = reg(f"take5_{d}", 1, take5), reg(f"out5_{d}", 1, out5)
            code5, last5 = reg(f"code5_{d}", 8, code5), reg(f"last5_{d}", 1, last5)
            base5 = reg(f"base5_{d}", range(max(2, B)), base5)
            for s in range(slots):
                nodes = _argmin_levels(m, cand5[s], nc, f"sel{s}", levels=1 if levels else 0, first_level=d)
                # Position and value (equal here) in registers of their own: with one register
                # for both, Yosys 0.70's synth_ecp5 failed an assertion in abc9's reintegration
                # (kernel/rtlil.cc:3091) on the 1-lane encoder.
                cand5[s] = [(reg(f"cand5_{d}_{s}_{i}_key", k.shape(), k), reg(f"cand5_{d}_{s}_{i}_pos", range(max(2, nc)), p),
                             reg(f"cand5_{d}_{s}_{i}_val", len(v), v)) for i, (k, p, v) in enumerate(nodes)]

        # Stage 6: the selector and its indices (the tree's root, a register) into the output
        # beat, which leaves when its last block is in.
        beat = Signal(self.o.payload.shape(), name="out_beat")
        beat_valid = Signal(name="out_beat_valid")
        with m.If(en):
            m.d.sync += beat_valid.eq(out5)
            with m.If(take5):
                m.d.sync += [beat.scale.eq(code5), beat.last.eq(last5)]
                # The first block of an output beat clears the rest (positions past a `last`).
                with m.If(base5 == 0):
                    m.d.sync += beat.idx.as_value().eq(0)
                    if cfg.selector_bits:
                        m.d.sync += beat.sel.as_value().eq(0)
                for s in range(slots):
                    (_, _, best), = cand5[s]
                    best = Value.cast(best)
                    sel = best[:cbits]
                    chosen = [best[cbits + k * cfg.index_bits:cbits + (k + 1) * cfg.index_bits] for k in range(lb)]
                    with m.Switch(base5):
                        for b0 in range(0, B, slots):
                            with m.Case(b0):
                                if cfg.selector_bits:
                                    m.d.sync += beat.sel[b0 + s].eq(sel)
                                m.d.sync += [beat.idx[(b0 + s) * lb + k].eq(chosen[k]) for k in range(lb)]

        # Stage 7: a queue of two output beats. A finished beat moves in on every edge the pipeline
        # advances; ``advance`` is set for the next edge while the queue will then still have a free
        # entry, whatever the consumer does, so no beat is ever dropped and a consumer that is
        # always ready sees one beat per cycle.
        self._output_queue(m, en, en & beat_valid, beat)
        return m

    def _output_queue(self, m, en, push, beat):
        """Two entries behind the pipeline's output beat; drives ``o`` and the ``advance``
        register ``en``."""
        entries = [Signal(Value.cast(beat).shape(), name=f"out_q{k}") for k in range(2)]
        level, level_next = Signal(range(3), name="out_level"), Signal(range(4), name="out_level_next")
        wp, rp = Signal(name="out_wp"), Signal(name="out_rp")
        pop = self.o.valid & self.o.ready
        with m.If(push):
            m.d.sync += [entries[k].eq(Mux(wp == k, Value.cast(beat), entries[k])) for k in range(2)]
            m.d.sync += wp.eq(~wp)
        with m.If(pop):
            m.d.sync += rp.eq(~rp)
        m.d.comb += level_next.eq(level + push - pop)
        m.d.sync += [level.eq(level_next), en.eq(level_next < 2)]
        m.d.comb += [self.o.valid.eq(level != 0), self.o.payload.as_value().eq(Mux(rp, entries[1], entries[0]))]
