"""Codebook sets: Nc codebooks of 16 signed integer entries, and their JSON file.

File format (``bcq calibrate`` writes it, ``--codebooks`` reads it)::

    {"kind": "bcq-codebooks", "version": 1,
     "config": {...BCQConfig fields...},
     "entries": [[e00, ..., e0F], ..., [eN0, ..., eNF]],
     "calibration": {...free-form provenance...}}
"""

from dataclasses import dataclass, field
import json
from pathlib import Path

import torch

from .config import DEFAULT, PRESETS, BCQConfig
from .errors import BCQError, ConfigError, FileFormatError
from .files import atomic_write, read_json

__all__ = ["Codebooks", "load_codebooks", "default_codebooks", "shipped_codebooks",
           "shipped_codebooks_path", "CODEBOOK_SOURCES", "DEFAULT_SOURCE", "DEFAULT_CODEBOOKS_PATH"]

FILE_KIND = "bcq-codebooks"
FILE_VERSION = 1
DATA = Path(__file__).parent / "data"
# Every preset ships two calibrated sets: "synthetic" (sw/formats/calibdata.py's seeded mix) and
# "minilm" (MiniLM-L6 weights + activations on sentences the evaluation never sees). Each file's
# "calibration" field holds the command line that rebuilds it bit for bit.
CODEBOOK_SOURCES = ("synthetic", "minilm")
DEFAULT_SOURCE = "synthetic"


def shipped_codebooks_path(preset, source=DEFAULT_SOURCE):
    """Where the shipped set of ``preset`` calibrated on ``source`` lies (a :class:`ConfigError`
    names the allowed values of either)."""
    if preset not in PRESETS:
        raise ConfigError("preset", preset, tuple(PRESETS))
    if source not in CODEBOOK_SOURCES:
        raise ConfigError("codebook source", source, CODEBOOK_SOURCES)
    return DATA / f"{preset}.{source}.json"


DEFAULT_CODEBOOKS_PATH = shipped_codebooks_path("w4a4-4.5")
# At most 16 x 16 small integers and a calibration record: a few kB. The cap keeps a wrong file (or
# /dev/zero behind a link) from being read whole.
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class Codebooks:
    """A set of Nc codebooks of 16 signed integer entries.

    Parameters
    ----------
    config : :class:`BCQConfig`
        The format the codebooks are for (Nc, entry width).
    entries : tensor
        ``entries[c, i]`` is the value of index ``i`` in codebook ``c``: integers of shape
        ``(n_codebooks, 16)`` within the config's INT range (validated; stored as int64 on CPU).
    provenance : dict
        Free-form calibration record written into the JSON file.
    """

    config: BCQConfig
    entries: torch.Tensor  # int64 [n_codebooks, 16]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        cfg = self.config
        e = torch.as_tensor(self.entries)
        if e.is_floating_point() and not torch.equal(e, e.round()):
            raise BCQError("codebook entries must be integers")
        e = e.to(torch.int64)
        if tuple(e.shape) != (cfg.n_codebooks, cfg.n_entries):
            raise BCQError(f"codebooks have shape {tuple(e.shape)}; the config needs "
                           f"({cfg.n_codebooks}, {cfg.n_entries}) (n_codebooks x 2**index_bits)")
        if e.numel() and (e.min() < cfg.entry_min or e.max() > cfg.entry_max):
            raise BCQError(f"codebook entries span [{int(e.min())}, {int(e.max())}]; "
                           f"INT{cfg.entry_bits} allows [{cfg.entry_min}, {cfg.entry_max}]")
        object.__setattr__(self, "entries", e.cpu())

    def __eq__(self, other):
        return (isinstance(other, Codebooks) and self.config == other.config
                and torch.equal(self.entries, other.entries))

    def to_json(self):
        return {"kind": FILE_KIND, "version": FILE_VERSION, "config": self.config.to_dict(),
                "entries": self.entries.tolist(), "calibration": self.provenance}

    def save(self, path):
        """Write the JSON file atomically (temp file + fsync + rename: a crash never leaves half a
        file; a new file's mode follows the umask). Raises :class:`FileFormatError` naming it."""
        atomic_write(path, (json.dumps(self.to_json(), indent=1) + "\n").encode(), make_parents=True)

    @classmethod
    def from_json(cls, obj, *, source="codebooks"):
        if not isinstance(obj, dict) or obj.get("kind") != FILE_KIND:
            raise FileFormatError(source, f"not a codebook file (expected \"kind\": \"{FILE_KIND}\")")
        if obj.get("version") != FILE_VERSION:
            raise FileFormatError(source, f"version {obj.get('version')!r} is not supported "
                                  f"(this program reads version {FILE_VERSION})")
        try:
            config = BCQConfig.from_dict(obj.get("config"), source="config")
        except ConfigError as e:
            raise FileFormatError(source, str(e)) from None
        entries = obj.get("entries")
        if (not isinstance(entries, list) or not all(isinstance(r, list) for r in entries)
                or not all(isinstance(v, int) and not isinstance(v, bool) for r in entries for v in r)):
            raise FileFormatError(source, "field 'entries' must be a list of lists of integers")
        if len({len(r) for r in entries}) > 1:
            raise FileFormatError(source, "field 'entries': rows have different lengths")
        values = [v for r in entries for v in r]
        if values and (min(values) < config.entry_min or max(values) > config.entry_max):
            # Checked here, before torch: 2**63 does not even fit an int64.
            lo, hi = min(values), max(values)
            raise FileFormatError(source, f"field 'entries': codebook entries span [{_short(lo)}, {_short(hi)}]; "
                                  f"INT{config.entry_bits} allows [{config.entry_min}, {config.entry_max}]")
        calibration = obj.get("calibration", {})
        if not isinstance(calibration, dict):
            raise FileFormatError(source, "field 'calibration' must be an object")
        try:
            return cls(config, torch.tensor(entries, dtype=torch.int64).reshape(len(entries), -1), calibration)
        except (BCQError, RuntimeError, OverflowError) as e:
            raise FileFormatError(source, f"field 'entries': {e}") from None


def _short(v):
    return str(v) if abs(v) < 10**6 else f"{v:.3g}"


def load_codebooks(path):
    """Read a codebook JSON file (``bcq calibrate`` writes them): a regular file of at most
    :data:`MAX_FILE_BYTES`, JSON of bounded nesting, every field checked. Raises
    :class:`FileFormatError` naming the file and field."""
    path = Path(path)
    return Codebooks.from_json(read_json(path, max_bytes=MAX_FILE_BYTES, what="codebook file"), source=str(path))


def shipped_codebooks(preset, source=DEFAULT_SOURCE):
    """The shipped set of a preset (``source``: one of :data:`CODEBOOK_SOURCES`)."""
    cb = load_codebooks(shipped_codebooks_path(preset, source))
    if cb.config != PRESETS[preset]:
        raise FileFormatError(shipped_codebooks_path(preset, source),
                              f"holds codebooks for {cb.config.describe()}, not for preset {preset}")
    return cb


def default_codebooks(config=None, source=DEFAULT_SOURCE):
    """The shipped, calibrated set for ``config`` (default: the default config), which must be one
    of the presets. For another config there is no shipped set: calibrate one (``bcq calibrate``)."""
    config = DEFAULT if config is None else config
    for name, preset in PRESETS.items():
        if preset == config:
            return shipped_codebooks(name, source)
    raise BCQError(f"no shipped codebooks for {config.describe()} (shipped: the presets "
                   f"{', '.join(PRESETS)}); calibrate a set with 'bcq calibrate' and pass --codebooks")
