"""Word layouts of the matrix-vector engines' memories: defined here once.

Two engines: the BCQ engine (``EngineLayout``, LO-BCQ weights) and the Ax-BxP engine
(``BxPLayout``, INT8/INTp per-channel weights; see its docstring).

The image writer and reader (``bcq.sw.host.image``), the engine's memory initialization and write ports
(``bcq.hw.gemv``) and host drivers all use these layouts and address formulas.

Memories (R = ``lanes`` rows computed in parallel, B = ``blocks_per_cycle``):

- **weights**: one word per (row group g, beat k): for each lane r, the decoded codewords
  ``cb[sel][idx]`` (signed ``entry_bits``) of the Lb*B scalars of beat k of row g*R + r, and
  their B selectors. Address ``g * beats_per_row + k``. The engine multiplies the stored
  codewords directly, so it needs no weight-codebook lookup per row (the activation is decoded
  once and shared by all rows); the selectors are kept so that an image reads back as the same
  encoded matrix (the codebook is written once per image, the weights carry their codewords).
- **scales**: one word per (row group g, block array a): the R lanes' 8-bit scale codes.
  Address ``g * arrays_per_row + a``.
- **codebook**: Nc x 16 signed ``entry_bits`` entries, address ``selector * 16 + index``.

Rows past the matrix (padding of the last group) hold index 0, selector 0 and the smallest
scale code; the engine does not emit their results.
"""

from dataclasses import dataclass
import math

from amaranth import signed, unsigned
from amaranth.hdl import Shape
from amaranth.lib import data
import torch

from bcq.sw.formats.axbxp import BxPConfig
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ConfigError
from bcq.sw.formats.lobcq import BCQTensor

from .geometry import BeatGeometry

__all__ = ["EngineLayout", "weight_words", "scale_words", "words_to_tensor", "scale_fill",
           "BxPLayout", "bxp_weight_words", "bxp_words_to_tensor"]


@dataclass(frozen=True)
class EngineLayout:
    """Memory word layout of an engine of ``lanes`` rows computed in parallel.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
    lanes : int
        R, rows computed in parallel (1..64).
    blocks_per_cycle : int
        B, blocks per beat (validated by :class:`bcq.sw.contract.geometry.BeatGeometry`).

    Members
    -------
    geometry : :class:`BeatGeometry`
        Scalars per beat and beats per array, shared with the activation stream.
    weight_word, scale_word : data layouts
        One weight-memory word (R lanes of :meth:`lane_layout`) and one scale-memory word.
    """

    config: BCQConfig
    lanes: int = 4
    blocks_per_cycle: int = 1

    def __post_init__(self):
        if not isinstance(self.lanes, int) or isinstance(self.lanes, bool) or not 1 <= self.lanes <= 64:
            raise ConfigError("lanes", self.lanes, "1..64")
        object.__setattr__(self, "geometry", BeatGeometry(self.config, self.blocks_per_cycle))

    # -- shapes -------------------------------------------------------------------------
    @property
    def scalars_per_beat(self):
        return self.geometry.scalars_per_beat

    @property
    def beats_per_array(self):
        return self.geometry.beats_per_array

    @property
    def lane_layout(self):
        """One row's part of a weight word: ``cw`` (the beat's codewords) and ``sel`` (its B
        selectors; absent when Nc = 1)."""
        cfg = self.config
        fields = {"cw": data.ArrayLayout(signed(cfg.entry_bits), self.scalars_per_beat)}
        if cfg.selector_bits:
            fields["sel"] = data.ArrayLayout(unsigned(cfg.selector_bits), self.blocks_per_cycle)
        return data.StructLayout(fields)

    @property
    def weight_word(self):
        return data.ArrayLayout(self.lane_layout, self.lanes)

    @property
    def scale_word(self):
        return data.ArrayLayout(unsigned(self.config.scale_bits), self.lanes)

    @property
    def weight_width(self):
        return Shape.cast(self.weight_word).width

    @property
    def scale_width(self):
        return Shape.cast(self.scale_word).width

    # -- addresses and depths ----------------------------------------------------------------
    def check_shape(self, rows, cols):
        if rows < 1 or cols < 1 or cols % self.config.array_len:
            raise ConfigError("shape", (rows, cols),
                              f"rows >= 1 and cols a positive multiple of array_len={self.config.array_len}")

    def groups(self, rows):
        return math.ceil(rows / self.lanes)

    def beats_per_row(self, cols):
        return cols // self.scalars_per_beat

    def arrays_per_row(self, cols):
        return cols // self.config.array_len

    def weight_depth(self, rows, cols):
        return self.groups(rows) * self.beats_per_row(cols)

    def scale_depth(self, rows, cols):
        return self.groups(rows) * self.arrays_per_row(cols)

    def describe(self):
        """The layout as JSON-able data (written into the image manifest)."""
        def fields(layout):
            return [{"name": name, "offset": f.offset, "width": Shape.cast(f.shape).width}
                    for name, f in layout]
        return {"lanes": self.lanes, "blocks_per_cycle": self.blocks_per_cycle,
                "weight_word": {"width": self.weight_width, "lane_width": Shape.cast(self.lane_layout).width,
                                "lane_fields": fields(self.lane_layout),
                                "address": "group * beats_per_row + beat"},
                "scale_word": {"width": self.scale_width, "lane_width": self.config.scale_bits,
                               "address": "group * arrays_per_row + array"},
                "codebook": {"width": self.config.entry_bits, "depth": self.config.n_codebooks * 16,
                             "address": "selector * 16 + index"}}


# -- word packing (field offsets come from the layout object) ------------------------------

def _lane_fields(layout: EngineLayout):
    lane = layout.lane_layout
    cw = lane["cw"]
    cw_w = layout.config.entry_bits
    idx_off = [cw.offset + j * cw_w for j in range(layout.scalars_per_beat)]
    sel_off = []
    if layout.config.selector_bits:
        sel = lane["sel"]
        sel_off = [sel.offset + b * layout.config.selector_bits for b in range(layout.blocks_per_cycle)]
    lane_w = layout.weight_width // layout.lanes
    return idx_off, sel_off, lane_w


def scale_fill(cfg: BCQConfig):
    """Scale code of padding rows: the smallest code (value 0 for E4M3)."""
    return 0 if cfg.scale_format == "e4m3" else 127 + cfg.scale.exp_min


def _codewords(q: BCQTensor, pad):
    """The decoded codewords ``cb[sel][idx]`` of every scalar (padding rows: index 0, selector 0)."""
    cfg = q.config
    idx = torch.cat([q.indices, torch.zeros(pad, q.shape[1], dtype=torch.uint8)]).long()
    sel = torch.cat([q.selectors, torch.zeros(pad, q.shape[1] // cfg.block_len, dtype=torch.uint8)]).long()
    return q.codebooks.entries.long()[sel.repeat_interleave(cfg.block_len, dim=1), idx], sel


def weight_words(q: BCQTensor, layout: EngineLayout):
    """Weight-memory words (ints) of a 2-D encoded matrix, in address order."""
    rows, cols = q.shape
    layout.check_shape(rows, cols)
    R, S, B = layout.lanes, layout.scalars_per_beat, layout.blocks_per_cycle
    idx_off, sel_off, lane_w = _lane_fields(layout)
    groups, bpr = layout.groups(rows), layout.beats_per_row(cols)
    cw, sel = _codewords(q, groups * R - rows)
    mask = (1 << layout.config.entry_bits) - 1
    cw = (cw & mask).reshape(groups, R, bpr, S).tolist()
    sel = sel.reshape(groups, R, bpr, B).tolist()
    words = []
    for g in range(groups):
        for k in range(bpr):
            word = 0
            for r in range(R):
                base = r * lane_w
                for off, v in zip(idx_off, cw[g][r][k]):
                    word |= v << (base + off)
                for off, v in zip(sel_off, sel[g][r][k]):
                    word |= v << (base + off)
            words.append(word)
    return words


def scale_words(q: BCQTensor, layout: EngineLayout):
    rows, cols = q.shape
    R, groups, apr = layout.lanes, layout.groups(rows), layout.arrays_per_row(cols)
    pad = groups * R - rows
    sc = torch.cat([q.scales, torch.full((pad, apr), scale_fill(q.config), dtype=torch.uint8)])
    sc = sc.reshape(groups, R, apr).tolist()
    w = layout.config.scale_bits
    return [sum(sc[g][r][a] << (r * w) for r in range(R)) for g in range(groups) for a in range(apr)]


def words_to_tensor(wwords, swords, shape, codebooks, tensor_scale, layout: EngineLayout):
    """Inverse of weight_words/scale_words: rebuild the encoded matrix. A codeword reads back as
    the first index of its block's codebook that holds it (the encoder's choice on ties), so an
    encoded matrix survives the round trip; raises :class:`BCQError` naming the first word whose
    selector exceeds Nc or whose codeword is not in its codebook."""
    rows, cols = shape
    R, B = layout.lanes, layout.blocks_per_cycle
    idx_off, sel_off, lane_w = _lane_fields(layout)
    groups, bpr, apr = layout.groups(rows), layout.beats_per_row(cols), layout.arrays_per_row(cols)
    cfg = layout.config
    em, sm, half = (1 << cfg.entry_bits) - 1, (1 << cfg.selector_bits) - 1, 1 << (cfg.entry_bits - 1)
    first_index = [{} for _ in range(cfg.n_codebooks)]   # selector -> codeword -> first index
    for s_, row in enumerate(codebooks.entries.tolist()):
        for i, v in enumerate(row):
            first_index[s_].setdefault(v, i)
    idx = [[[None] * bpr for _ in range(R)] for _ in range(groups)]
    sel = [[[None] * bpr for _ in range(R)] for _ in range(groups)]
    for g in range(groups):
        for k in range(bpr):
            word = wwords[g * bpr + k]
            for r in range(R):
                lane = word >> (r * lane_w)
                sel[g][r][k] = [(lane >> off) & sm for off in sel_off] if sel_off else [0] * B
                if max(sel[g][r][k]) >= cfg.n_codebooks:
                    raise BCQError(f"weight word {g * bpr + k}: a selector exceeds n_codebooks={cfg.n_codebooks}")
                idx[g][r][k] = []
                for j, off in enumerate(idx_off):
                    v = (lane >> off) & em
                    v, s_ = v - 2 * half if v >= half else v, sel[g][r][k][j // cfg.block_len]
                    if v not in first_index[s_]:
                        raise BCQError(f"weight word {g * bpr + k}: codeword {v} of row {g * R + r} is not "
                                       f"in codebook {s_}")
                    idx[g][r][k].append(first_index[s_][v])
    w = layout.config.scale_bits
    sc = [[[(swords[g * apr + a] >> (r * w)) & 0xFF for a in range(apr)] for r in range(R)] for g in range(groups)]
    t = lambda v, *s: torch.tensor(v, dtype=torch.uint8).reshape(*s)[:rows]  # noqa: E731
    return BCQTensor(codebooks, t(idx, groups * R, cols), t(sel, groups * R, cols // layout.config.block_len),
                     t(sc, groups * R, apr), tensor_scale)


# -- Ax-BxP engine ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BxPLayout:
    """Weight-memory word layout of the Ax-BxP matrix-vector engine (``bcq.hw.bxp_engine``).

    R rows are computed in parallel, one Ax-BxP MAC each; a beat carries P = the mode's
    products per cycle (``BxPConfig.products_per_cycle``) columns. A weight word holds one
    beat of R rows: lane l of row r is the N-bit two's complement field at bit
    ``(r * max_lanes + l) * N``; lanes l >= P are zero. Address ``group * beats_per_row + beat``,
    beat b covering columns b*P .. b*P + P - 1 (zeros past the last column, zero rows past the
    last row: a zero operand contributes 0 in every mode). The activation stream uses the
    same lanes (``bcq.sw.contract.beats.bxp_beat_layout``'s ``x``).

    Parameters
    ----------
    config : :class:`bcq.sw.formats.axbxp.BxPConfig`
        The MAC's N, k and modes.
    rows : int
        R, rows computed in parallel (1..64).

    Members
    -------
    weight_width : int
        Bits of a weight word (R * max_lanes * N).
    """

    config: BxPConfig
    rows: int = 4

    def __post_init__(self):
        if not isinstance(self.rows, int) or isinstance(self.rows, bool) or not 1 <= self.rows <= 64:
            raise ConfigError("rows", self.rows, "1..64")

    def mode(self, name):
        """The :class:`Mode` called ``name`` (a one-line error lists the allowed names)."""
        return self.config.modes[self.config.mode_index(name)]

    def lanes(self, mode):
        """P: columns per beat in ``mode`` (a name or a Mode)."""
        return self.config.products_per_cycle(self.mode(mode) if isinstance(mode, str) else mode)

    @property
    def weight_width(self):
        return self.rows * self.config.max_lanes * self.config.n_bits

    def groups(self, rows):
        return math.ceil(rows / self.rows)

    def beats_per_row(self, cols, mode):
        return math.ceil(cols / self.lanes(mode))

    def weight_depth(self, rows, cols, mode):
        return self.groups(rows) * self.beats_per_row(cols, mode)

    def describe(self):
        """The layout as JSON-able data (written into the image manifest)."""
        return {"rows": self.rows, "n_bits": self.config.n_bits, "block_bits": self.config.block_bits,
                "modes": [{"name": m.name, "kind": m.kind, "precision": m.precision, "keep": m.keep,
                           "lanes": self.lanes(m)} for m in self.config.modes],
                "weight_word": {"width": self.weight_width,
                                "field": "row r, lane l: bits (r * max_lanes + l) * n_bits, n_bits wide",
                                "max_lanes": self.config.max_lanes,
                                "address": "group * beats_per_row + beat"}}


def _bxp_grid(q, layout: BxPLayout, mode):
    """(groups, R, beats, P) view of the zero-padded integer matrix."""
    rows, cols = q.shape
    R, P = layout.rows, layout.lanes(mode)
    G, bpr = layout.groups(rows), layout.beats_per_row(cols, mode)
    padded = torch.zeros(G * R, bpr * P, dtype=torch.int64)
    padded[:rows, :cols] = q
    return padded.reshape(G, R, bpr, P)


def bxp_weight_words(q, layout: BxPLayout, mode):
    """Weight-memory words (ints, address order) of an integer matrix ``q`` (rows, cols) whose
    values lie in ``mode``'s signed range."""
    n, L = layout.config.n_bits, layout.config.max_lanes
    grid = (_bxp_grid(q, layout, mode) & ((1 << n) - 1)).tolist()
    words = []
    for g in grid:
        for k in range(len(g[0])):
            word = 0
            for r, row in enumerate(g):
                for lane, v in enumerate(row[k]):
                    word |= v << ((r * L + lane) * n)
            words.append(word)
    return words


def bxp_words_to_tensor(words, shape, layout: BxPLayout, mode):
    """Inverse of :func:`bxp_weight_words`: the signed integer matrix (rows, cols)."""
    rows, cols = shape
    n, L, R, P = layout.config.n_bits, layout.config.max_lanes, layout.rows, layout.lanes(mode)
    G, bpr = layout.groups(rows), layout.beats_per_row(cols, mode)
    half, mask = 1 << (n - 1), (1 << n) - 1
    vals = [[[((words[g * bpr + k] >> ((r * L + lane) * n)) & mask) for k in range(bpr) for lane in range(P)]
             for r in range(R)] for g in range(G)]
    t = torch.tensor(vals, dtype=torch.int64).reshape(G * R, bpr * P)
    t = torch.where(t >= half, t - 2 * half, t)
    return t[:rows, :cols].contiguous()
