"""Word layout of the BCQ matrix-vector engine's memories: defined here once.

The image writer and reader (``sw.image``), the engine's memory initialization and write ports
(``hw.gemv``) and host drivers all use these layouts and address formulas.

Memories (R = ``lanes`` rows computed in parallel, B = ``blocks_per_cycle``):

- **weights**: one word per (row group g, beat k): for each lane r, the 4-bit indices of the
  Lb*B scalars of beat k of row g*R + r, and their B selectors. Address ``g * beats_per_row + k``.
- **scales**: one word per (row group g, block array a): the R lanes' 8-bit scale codes.
  Address ``g * arrays_per_row + a``.
- **codebook**: Nc x 16 signed ``entry_bits`` entries, address ``selector * 16 + index``.

Rows past the matrix (padding of the last group) hold index 0, selector 0 and the smallest
scale code; the engine does not emit their results.
"""

from dataclasses import dataclass
import math

from amaranth import unsigned
from amaranth.hdl import Shape
from amaranth.lib import data

from .config import BCQConfig
from .errors import ConfigError

__all__ = ["EngineLayout"]


@dataclass(frozen=True)
class EngineLayout:
    config: BCQConfig
    lanes: int = 4
    blocks_per_cycle: int = 1

    def __post_init__(self):
        if not isinstance(self.lanes, int) or not 1 <= self.lanes <= 64:
            raise ConfigError("lanes", self.lanes, "1..64")
        b = self.blocks_per_cycle
        if not isinstance(b, int) or b < 1 or self.config.array_len % (self.config.block_len * b):
            raise ConfigError("blocks_per_cycle", b, f"a divisor of blocks_per_array={self.config.blocks_per_array}")

    # -- shapes -------------------------------------------------------------------------
    @property
    def scalars_per_beat(self):
        return self.config.block_len * self.blocks_per_cycle

    @property
    def beats_per_array(self):
        return self.config.array_len // self.scalars_per_beat

    @property
    def lane_layout(self):
        cfg = self.config
        fields = {"idx": data.ArrayLayout(unsigned(cfg.index_bits), self.scalars_per_beat)}
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
