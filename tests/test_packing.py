"""The vectorized packer (``pack_words``) against the scalar one (``pack``), layout by layout."""
from amaranth import signed, unsigned
from amaranth.hdl import Shape
from amaranth.lib import data
from helpers import exactly
import numpy as np
import pytest

from bcq.sw.contract.beats import activation_layout, bcq_beat_layout, bxp_beat_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.contract.packing import pack, pack_words, words_to_int
from bcq.sw.formats.axbxp import DEFAULT_BXP
from bcq.sw.formats.config import BCQConfig


def random_value(layout, rng, n):
    """(vectorized value, per-row scalar values) of ``layout``; signed fields get negatives."""
    if isinstance(layout, data.StructLayout):
        parts = {name: random_value(f.shape, rng, n) for name, f in layout}
        return {k: v[0] for k, v in parts.items()}, [{k: v[1][i] for k, v in parts.items()} for i in range(n)]
    if isinstance(layout, data.ArrayLayout):
        if isinstance(layout.elem_shape, data.Layout):
            parts = [random_value(layout.elem_shape, rng, n) for _ in range(layout.length)]
            return [p[0] for p in parts], [[p[1][i] for p in parts] for i in range(n)]
        shape = Shape.cast(layout.elem_shape)
        lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else (0, 1 << shape.width)
        v = rng.integers(lo, hi, (n, layout.length))
        return v, v.tolist()
    shape = Shape.cast(layout)
    lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else (0, 1 << shape.width)
    v = rng.integers(lo, hi, n, dtype=np.int64)
    return v, v.tolist()


LAYOUTS = {
    "bcq default": bcq_beat_layout(BeatGeometry(BCQConfig())),
    "bcq 2 blocks/cycle": bcq_beat_layout(BeatGeometry(BCQConfig(), 2)),
    "bcq Nc=1": bcq_beat_layout(BeatGeometry(BCQConfig(n_codebooks=1))),
    "activation": activation_layout(BeatGeometry(BCQConfig())),
    "bxp": bxp_beat_layout(DEFAULT_BXP),
    "engine weight word (array of structs)": EngineLayout(BCQConfig(), 4, 1).weight_word,
    "engine output": data.StructLayout({"value": signed(55), "row": unsigned(4)}),
    "signed accumulator": signed(59),
    "odd widths": data.StructLayout({"a": unsigned(3), "b": data.ArrayLayout(signed(7), 11), "c": signed(33)}),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_pack_words_equals_pack(name, seed):
    layout = LAYOUTS[name]
    rng = np.random.default_rng(seed)
    vec, rows = random_value(layout, rng, 50)
    words = pack_words(layout, vec, 50)
    assert words.dtype == np.uint32 and words.shape == (50, -(-Shape.cast(layout).width // 32))
    for i, row in enumerate(rows):
        assert words_to_int(words[i]) == pack(layout, row)


def test_pack_words_errors():
    layout = bcq_beat_layout(BeatGeometry(BCQConfig()))
    vec, _ = random_value(layout, np.random.default_rng(0), 4)
    with pytest.raises(KeyError, match=exactly('"field \'last\' missing from packed value"')):
        pack_words(layout, {k: v for k, v in vec.items() if k != "last"}, 4)
    with pytest.raises(ValueError, match=exactly("4 values for 5 rows")):
        pack_words(layout, vec, 5)
    with pytest.raises(ValueError, match=exactly("array of 8 elements given shape (4, 7)")):
        pack_words(layout, {**vec, "w_idx": vec["w_idx"][:, :7]}, 4)
