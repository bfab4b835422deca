"""How a vector is cut into beats: the one definition, validated once.

Every stream of LO-BCQ operands (the BCQ unit's beats, the engine's activation beats, the
engine's weight words) carries B = ``blocks_per_cycle`` consecutive blocks of Lb scalars per
beat; a block array (LA scalars, one scale) spans ``beats_per_array`` beats. The gateware, the
packers and the image layout all read these figures from a :class:`BeatGeometry`.
"""

from dataclasses import dataclass
import operator

from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import ConfigError

__all__ = ["BeatGeometry"]


@dataclass(frozen=True)
class BeatGeometry:
    """B blocks of both operands per beat.

    Parameters
    ----------
    config : :class:`bcq.sw.formats.config.BCQConfig`
        The format.
    blocks_per_cycle : int
        B, blocks per beat; a divisor of ``config.blocks_per_array`` (a beat never straddles
        two block arrays).

    Members
    -------
    scalars_per_beat : int
        ``B * block_len``: the MACs one beat feeds.
    beats_per_array : int
        ``array_len / scalars_per_beat``.
    """

    config: BCQConfig
    blocks_per_cycle: int = 1

    def __post_init__(self):
        if not isinstance(self.config, BCQConfig):
            raise ConfigError("config", type(self.config).__name__, "a BCQConfig")
        try:
            b = operator.index(self.blocks_per_cycle)
        except TypeError:
            b = None
        if b is None or isinstance(self.blocks_per_cycle, bool) or b < 1 or self.config.blocks_per_array % b:
            raise ConfigError("blocks_per_cycle", self.blocks_per_cycle,
                              f"a divisor of blocks_per_array={self.config.blocks_per_array}")
        object.__setattr__(self, "blocks_per_cycle", b)

    @property
    def scalars_per_beat(self):
        return self.config.block_len * self.blocks_per_cycle

    @property
    def beats_per_array(self):
        return self.config.array_len // self.scalars_per_beat

    def beats(self, n_scalars):
        """Beats of a vector of ``n_scalars`` (a positive multiple of ``array_len``)."""
        if n_scalars <= 0 or n_scalars % self.config.array_len:
            raise ConfigError("vector length", n_scalars, f"a positive multiple of array_len={self.config.array_len}")
        return n_scalars // self.scalars_per_beat
