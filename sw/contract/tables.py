"""The pair table: how the BCQ dot-product unit (``bcq.hw.bcq_dot.BCQDot``) holds its codebooks,
so that one block RAM port decodes two scalars of a block per cycle.

Two neighbouring scalars ``2p`` and ``2p + 1`` of a beat lie in the same block (``block_len`` is
even), so they share the selector ``s``. A word of the pair table, addressed by ``s``, the first
scalar's index ``a`` and the high three bits of the second's index ``b``, holds three codewords::

    word(s, a, b >> 1) = cb[s][a] | cb[s][b & ~1] << E | cb[s][b | 1] << 2E      (E = entry_bits)

The first scalar's codeword is field 0; the second's is field 1 or 2, picked by ``b & 1`` after
the read. Address ``(s * 16 + a) * 8 + (b >> 1)``; Nc x 128 words of ``3 * entry_bits`` bits
(1024 x 18 for the default config: one ECP5 DP16KD in 1024 x 18 mode, whose two ports decode
four scalars per cycle). Fields are two's complement, each ``entry_bits`` wide.

The unit's codebook write port takes these words (:func:`pair_table_words` makes them from a
:class:`bcq.sw.formats.codebooks.Codebooks`); every copy of an entry must agree, which holds for
any table this function makes. docs/arithmetic.md section 2 states the layout too.
"""

from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError

__all__ = ["PAIR_FIELDS", "pair_table_depth", "pair_table_width", "pair_table_address", "pair_table_words",
           "pair_table_decode"]

PAIR_FIELDS = 3


def _pairs(config: BCQConfig):
    """Values of the second index's high bits ``b >> 1``: half the entries of a codebook."""
    return config.n_entries // 2


def pair_table_depth(config: BCQConfig):
    return config.n_codebooks * config.n_entries * _pairs(config)


def pair_table_width(config: BCQConfig):
    return PAIR_FIELDS * config.entry_bits


def pair_table_address(config: BCQConfig, sel, a, b_high):
    """Word address of selector ``sel``, first index ``a`` and second index's high bits
    ``b_high`` (plain integers; the gateware builds the same with ``Cat(b_high, a, sel)``)."""
    return (sel * config.n_entries + a) * _pairs(config) + b_high


def pair_table_words(codebooks):
    """Every word of the pair table, in address order, as unsigned integers (the write port's
    ``data``, and the table's initial content)."""
    cfg = codebooks.config
    E, mask = cfg.entry_bits, (1 << cfg.entry_bits) - 1
    entries = codebooks.entries.tolist()
    if len(entries) != cfg.n_codebooks or any(len(row) != cfg.n_entries for row in entries):
        raise BCQError(f"codebooks: {len(entries)} rows for a pair table of Nc = {cfg.n_codebooks}")
    words = []
    for row in entries:
        for a in range(cfg.n_entries):
            for bh in range(_pairs(cfg)):
                words.append((row[a] & mask) | (row[2 * bh] & mask) << E | (row[2 * bh + 1] & mask) << 2 * E)
    return words


def pair_table_decode(config: BCQConfig, word, b_low):
    """The two codewords ``(first, second)`` of a read word (the gateware's field selection,
    said in Python; used by the tests)."""
    E = config.entry_bits

    def field(k):
        v = (word >> (k * E)) & ((1 << E) - 1)
        return v - (1 << E) if v >> (E - 1) else v
    return field(0), field(1 + b_low)
