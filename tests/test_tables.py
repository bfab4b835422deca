"""The pair table (sw/contract/tables.py): every lookup the gateware can make returns the
codebook entries, for every config shape, checked exhaustively against the codebooks."""
import pytest
import torch

from bcq.sim.vectors import random_codebooks
from bcq.sw.contract.tables import (pair_table_address, pair_table_decode, pair_table_depth, pair_table_width,
                                    pair_table_words)
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError


@pytest.mark.parametrize("cfg", [BCQConfig(), BCQConfig(n_codebooks=1), BCQConfig(n_codebooks=16, block_len=4),
                                 BCQConfig(entry_bits=8), BCQConfig(entry_bits=4, n_codebooks=2, block_len=2)],
                         ids=str)
def test_every_pair_lookup_returns_both_entries(cfg, seed):
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    words = pair_table_words(cb)
    assert len(words) == pair_table_depth(cfg) == cfg.n_codebooks * 16 * 8
    assert all(0 <= w < 1 << pair_table_width(cfg) for w in words)
    e = cb.entries.tolist()
    for s in range(cfg.n_codebooks):
        for a in range(16):
            for b in range(16):
                word = words[pair_table_address(cfg, s, a, b >> 1)]
                assert pair_table_decode(cfg, word, b & 1) == (e[s][a], e[s][b]), (s, a, b)


def test_extreme_entries_keep_their_sign():
    cfg = BCQConfig()
    lo, hi = -(1 << (cfg.entry_bits - 1)), (1 << (cfg.entry_bits - 1)) - 1
    entries = torch.tensor([[lo, hi] * 8] * cfg.n_codebooks)
    words = pair_table_words(Codebooks(cfg, entries))
    for b in range(16):
        assert pair_table_decode(cfg, words[pair_table_address(cfg, 3, 0, b >> 1)], b & 1) == (lo, [lo, hi][b & 1])


def test_wrong_shape_is_refused():
    class Fake:
        config = BCQConfig()
        entries = torch.zeros(3, 16, dtype=torch.long)
    with pytest.raises(BCQError, match="Nc = 8"):
        pair_table_words(Fake())
