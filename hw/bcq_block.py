"""The block datapath of the BCQ dot-product unit: codebook decode, codeword products and the
sum over one beat's blocks. :class:`bcq.hw.bcq_dot.BCQDot` instantiates it; ``sim/formal.py``
proves it equal to a separately written specification (``sim/formal_spec.py``) for all inputs."""


from amaranth import Cat, Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.beats import bcq_beat_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.golden import Arithmetic

from .pipeline import enabled_reg, tree_sum, write_port_signature

__all__ = ["BlockDatapath", "CodewordDecode", "BeatProducts", "codebook_write_signature", "codebook_address",
           "codebook_lookup"]


def codebook_write_signature(config: BCQConfig):
    """Run-time codebook write port (a memory write port's signature; a component exposes it as
    ``Out(...)``, whose members are its inputs): entry ``addr = selector * 16 + index`` gets
    ``data`` on a clock edge where ``en`` is high."""
    return write_port_signature(signed(config.entry_bits), config.n_codebooks * config.n_entries)


def codebook_address(config: BCQConfig, idx, sel):
    """Table address of index ``idx`` in codebook ``sel`` (``sel`` None when Nc = 1)."""
    return Cat(idx, sel) if config.selector_bits else idx


def codebook_lookup(m, name, config: BCQConfig, init, cbw, addr, en):
    """One copy of the Nc x 16 codebook table with one synchronous read port (maps onto a block
    RAM); every copy is written through the shared ``cbw`` port (None: a ROM). Returns the
    read data, valid the cycle after ``addr`` and held while ``en`` is low. A read and a write
    of the same entry on one clock edge read the old value."""
    mem = memory.Memory(shape=signed(config.entry_bits), depth=config.n_codebooks * config.n_entries, init=init)
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
    """Codebook decode: the codewords of each beat's scalar pairs.

    Parameters
    ----------
    geometry, codebooks, codebook_rom, external_x
        As for :class:`BlockDatapath`.

    Members
    -------
    en, beat, cbw, x_words
        As in :class:`BlockDatapath`.
    w_words, x_out : ``Out(data.ArrayLayout(signed(entry_bits), lanes))``
        The codewords ``cb[sel][idx]`` of the beat taken ``latency`` (= 2) enabled edges earlier
        (table read, codeword register), with the table as it was on the edge that took the beat.
    """

    latency = 2

    def __init__(self, geometry: BeatGeometry, *, codebooks=None, codebook_rom=False, external_x=False):
        config = geometry.config
        self.config, self.geometry, self.lanes = config, geometry, geometry.scalars_per_beat
        self.codebooks, self.codebook_rom, self.external_x = codebooks, codebook_rom, external_x
        words = data.ArrayLayout(signed(config.entry_bits), self.lanes)
        members = {"en": In(1), "beat": In(bcq_beat_layout(geometry)),
                   "w_words": Out(words), "x_out": Out(words)}
        if not codebook_rom:
            members["cbw"] = Out(codebook_write_signature(config))
        if external_x:
            members["x_words"] = In(words)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg, en, p = self.config, self.en, self.beat
        init = self.codebooks.entries.flatten().tolist() if self.codebooks is not None else []
        for j in range(self.lanes):
            for op, out in (("w", self.w_words), ("x", self.x_out)):
                if op == "x" and self.external_x:
                    word = self.x_words[j]   # already one edge behind, like a table read
                else:
                    sel = p[f"{op}_sel"][j // cfg.block_len] if cfg.selector_bits else None
                    word = codebook_lookup(m, f"codebook_{op}{j}", cfg, init,
                                           None if self.codebook_rom else self.cbw,
                                           codebook_address(cfg, p[f"{op}_idx"][j], sel), en)
                # Codeword register: a block RAM's clock-to-output delay followed by a
                # multiplier does not fit a 50 MHz ECP5 cycle; this costs one cycle of latency.
                m.d.comb += out[j].eq(enabled_reg(m, en, f"c{op}{j}", signed(cfg.entry_bits), word))
        self._taps = {"w_codewords": (tuple(self.w_words[j] for j in range(self.lanes)), self.latency),
                      "x_codewords": (tuple(self.x_out[j] for j in range(self.lanes)), self.latency)}
        return m

    def stage_taps(self):
        """Trace taps (docs/arithmetic.md section 6), once elaborated: stage -> (values, enabled
        edges after the beat was taken)."""
        return _elaborated(self)


class BeatProducts(wiring.Component):
    """Products of ``lanes`` codeword pairs and their sum.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
    lanes : int
        Codeword pairs per beat.

    Members
    -------
    en : ``In(1)``
        Advance the pipeline.
    w_words, x_words : ``In(data.ArrayLayout(signed(entry_bits), lanes))``
        Codewords of both operands.
    beat_sum : ``Out(signed(block_sum_bits(lanes)))``
        ``sum_j w_words[j] * x_words[j]`` of the words taken ``latency`` (= 2) enabled edges
        earlier (product registers, sum register).
    """

    latency = 2

    def __init__(self, config: BCQConfig, lanes):
        self.config, self.lanes = config, lanes
        self.arith = Arithmetic(config)
        words = data.ArrayLayout(signed(config.entry_bits), lanes)
        super().__init__({"en": In(1), "w_words": In(words), "x_words": In(words),
                          "beat_sum": Out(signed(self.arith.block_sum_bits(lanes)))})

    def elaborate(self, platform):
        m = Module()
        ar, en = self.arith, self.en
        prods = [enabled_reg(m, en, f"prod{j}", signed(ar.product_bits), self.w_words[j] * self.x_words[j])
                 for j in range(self.lanes)]
        m.d.comb += self.beat_sum.eq(enabled_reg(m, en, "sum", self.beat_sum.shape(), tree_sum(prods)))
        self._taps = {"products": (tuple(prods), 1), "beat_sums": ((self.beat_sum,), self.latency)}
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
    external_x : bool
        Activation codewords come from ``x_words`` instead of a lookup here.

    Members
    -------
    en : ``In(1)``
        The pipeline advances on a clock edge where ``en`` is high (it holds otherwise).
    beat : ``In(bcq_beat_layout(geometry))``
        Operands taken on each enabled edge; only the index and selector fields are read.
    cbw : ``Out(codebook_write_signature(config))`` (absent with ``codebook_rom``)
    x_words : ``In(data.ArrayLayout(signed(entry_bits), B * block_len))`` (with ``external_x``)
        Codewords of the beat taken on the previous enabled edge.
    beat_sum : ``Out(signed(block_sum_bits))``
        ``sum_j cb[w_sel(j)][w_idx[j]] * cb[x_sel(j)][x_idx[j]]`` over the beat's scalars, for
        the beat taken ``latency`` enabled edges earlier, with the table as it was on the
        edge that took the beat (a write on that same edge is not seen).

    Latency: ``latency`` (= 4) enabled edges: table read, codeword register (``CodewordDecode``),
    products, sum (``BeatProducts``). ``sim/formal.py`` proves each part against the spec.
    """

    latency = CodewordDecode.latency + BeatProducts.latency

    def __init__(self, geometry: BeatGeometry, *, codebooks: Codebooks | None = None,
                 codebook_rom=False, external_x=False):
        config = geometry.config
        self.config, self.geometry = config, geometry
        self.codebooks, self.codebook_rom, self.external_x = codebooks, bool(codebook_rom), bool(external_x)
        self.lanes = geometry.scalars_per_beat
        self.arith = Arithmetic(config)
        members = {
            "en": In(1),
            "beat": In(bcq_beat_layout(geometry)),
            "beat_sum": Out(signed(self.arith.block_sum_bits(self.lanes))),
        }
        if not self.codebook_rom:
            members["cbw"] = Out(codebook_write_signature(config))
        if self.external_x:
            members["x_words"] = In(data.ArrayLayout(signed(config.entry_bits), self.lanes))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.decode = dec = CodewordDecode(
            self.geometry, codebooks=self.codebooks, codebook_rom=self.codebook_rom, external_x=self.external_x)
        m.submodules.products = mul = BeatProducts(self.config, self.lanes)
        m.d.comb += [dec.en.eq(self.en), dec.beat.eq(self.beat), mul.en.eq(self.en),
                     mul.w_words.eq(dec.w_words), mul.x_words.eq(dec.x_out), self.beat_sum.eq(mul.beat_sum)]
        if not self.codebook_rom:
            wiring.connect(m, wiring.flipped(self.cbw), dec.cbw)
        if self.external_x:
            m.d.comb += dec.x_words.eq(self.x_words)
        self._taps = (dec, mul)
        return m

    def stage_taps(self):
        """Trace taps, once elaborated: stage -> (values, enabled edges after the beat was taken);
        the products see the codewords ``CodewordDecode.latency`` edges after the beat."""
        dec, mul = _elaborated(self)
        return {**dec.stage_taps(), **{name: (values, dec.latency + delay)
                                       for name, (values, delay) in mul.stage_taps().items()}}
