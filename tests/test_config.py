import dataclasses
import math

from helpers import exactly
import pytest

from bcq.sw.formats.config import DEFAULT, PRESETS, SCALE_RULES, BCQConfig
from bcq.sw.formats.errors import ConfigError

FIELDS = "['array_len', 'block_len', 'e8m0_min_exp', 'entry_bits', 'n_codebooks', 'scale_format', 'scale_rule', 'tensor_scale']"


def test_default_is_the_abstracts_4_5_bit_setting():
    """The abstract: W4A4 "with 0.5-bits of overhead for storing scaling factors and codebook
    selectors": 4 index bits + log2(Nc)/Lb + 8/LA = 4 + 3/8 + 8/64."""
    c = DEFAULT
    assert (c.block_len, c.array_len, c.n_codebooks, c.entry_bits) == (8, 64, 8, 6)
    assert c.scale_format == "e4m3" and c.scale_bits == 8 and c.selector_bits == 3
    assert c.bits_per_scalar == 4 + 3 / 8 + 8 / 64 == 4.5
    assert BCQConfig.preset("w4a4-4.5") is DEFAULT and next(iter(PRESETS)) == "w4a4-4.5"


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_bits_follow_their_fields(name):
    c = BCQConfig.preset(name)
    expected = 4 + math.log2(c.n_codebooks) / c.block_len + 8 / c.array_len
    assert c.bits_per_scalar == pytest.approx(expected)
    # The name states the bits per scalar.
    assert name.split("-")[1] == f"{c.bits_per_scalar:g}"


def test_presets_are_distinct_and_unknown_preset_is_a_clear_error():
    assert len(set(PRESETS.values())) == len(PRESETS)
    with pytest.raises(ConfigError, match=exactly(
            f"invalid config: preset='w4a4'; allowed: {tuple(PRESETS)}")):
        BCQConfig.preset("w4a4")


def test_scale_rule_field():
    assert DEFAULT.scale_rule in SCALE_RULES
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: scale_rule='round'; allowed: ('ceil', 'nearest')")):
        BCQConfig(scale_rule="round")
    # A dict written before the field existed was encoded with "ceil".
    d = DEFAULT.to_dict()
    del d["scale_rule"]
    assert BCQConfig.from_dict(d).scale_rule == "ceil"


def test_parse_starts_from_a_base():
    base = BCQConfig.preset("w4a4-4.625")
    c = BCQConfig.parse("scale_rule=ceil", base)
    assert c.n_codebooks == 16 and c.scale_rule == "ceil"


@pytest.mark.parametrize("lb,la,nc,expected", [
    (4, 64, 4, 4 + 2 / 4 + 8 / 64), (8, 64, 1, 4 + 0 + 8 / 64), (16, 128, 16, 4 + 4 / 16 + 8 / 128),
    (2, 2, 2, 4 + 1 / 2 + 8 / 2)])
def test_bits_per_scalar_formula(lb, la, nc, expected):
    assert BCQConfig(block_len=lb, array_len=la, n_codebooks=nc).bits_per_scalar == pytest.approx(expected)


@pytest.mark.parametrize("field,value,allowed", [
    ("block_len", 3, "(2, 4, 8, 16)"), ("block_len", 32, "(2, 4, 8, 16)"),
    ("array_len", 60, "a positive multiple of block_len=8, at most 4096"),
    ("array_len", 0, "a positive multiple of block_len=8, at most 4096"),
    ("n_codebooks", 3, "(1, 2, 4, 8, 16)"), ("n_codebooks", 32, "(1, 2, 4, 8, 16)"),
    ("entry_bits", 3, "4..8"), ("entry_bits", 9, "4..8"),
    ("scale_format", "fp16", "('e4m3', 'e8m0')"), ("e8m0_min_exp", 5, "-30..0"),
    ("tensor_scale", "yes", "true or false"), ("block_len", 8.0, "an integer"), ("n_codebooks", True, "an integer")])
def test_invalid_config_names_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ConfigError, match=exactly(f"invalid config: {field}={value!r}; allowed: {allowed}")):
        BCQConfig(**{field: value})


def test_parse_and_dict_round_trip():
    c = BCQConfig.parse("block_len=4, n_codebooks=4,scale_format=e8m0,tensor_scale=false")
    assert (c.block_len, c.n_codebooks, c.scale_format, c.tensor_scale) == (4, 4, "e8m0", False)
    assert BCQConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=exactly(
            f"invalid config: --config colour='red'; allowed: one of {FIELDS}")):
        BCQConfig.parse("colour=red")
    with pytest.raises(ConfigError, match=exactly("invalid config: block_len='eight'; allowed: an integer")):
        BCQConfig.parse("block_len=eight")
    with pytest.raises(ConfigError, match=exactly("invalid config: --config='x'; allowed: KEY=VALUE")):
        BCQConfig.parse("block_len=4,x")
    with pytest.raises(ConfigError, match=exactly(
            f"invalid config: config.bogus=1; allowed: one of the fields {FIELDS}")):
        BCQConfig.from_dict({"bogus": 1})


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.block_len = 4
