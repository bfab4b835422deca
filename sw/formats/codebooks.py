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

from .config import BCQConfig
from .errors import BCQError, ConfigError, FileFormatError
from .files import atomic_write, read_json

__all__ = ["Codebooks", "load_codebooks", "default_codebooks", "DEFAULT_CODEBOOKS_PATH"]

FILE_KIND = "bcq-codebooks"
FILE_VERSION = 1
DEFAULT_CODEBOOKS_PATH = Path(__file__).parent / "data" / "default_codebooks.json"
# 16 x 16 small integers and a calibration record: a few kB. The cap keeps a wrong file (or
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


def default_codebooks(config=None):
    """The shipped, calibrated set for the default config (``sw/data/default_codebooks.json``).

    For another config there is no shipped set: calibrate one (``bcq calibrate``)."""
    cb = load_codebooks(DEFAULT_CODEBOOKS_PATH)
    if config is not None and config != cb.config:
        raise BCQError(f"the shipped codebooks are for {cb.config.describe()}; for "
                       f"{config.describe()} calibrate a set with 'bcq calibrate' and pass --codebooks")
    return cb
