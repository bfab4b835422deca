"""``KEY=VALUE`` assignments, typed: the one parser behind ``--config`` (format fields) and
``--option`` (hardware parameters). Every mistake is a :class:`ConfigError` naming the key."""

from .errors import ConfigError

__all__ = ["parse_assignments"]

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _convert(key, value, kind):
    if kind is bool:
        if value.lower() not in _TRUE + _FALSE:
            raise ConfigError(key, value, "true or false")
        return value.lower() in _TRUE
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(key, value, "an integer") from None
    return kind(value)


def parse_assignments(items, types, *, what):
    """``["block_len=4", ...]`` -> ``{"block_len": 4, ...}``.

    Parameters
    ----------
    items : iterable of str
        ``KEY=VALUE`` strings (surrounding blanks ignored; empty items skipped).
    types : dict
        Allowed keys and the type of each value: ``int``, ``bool`` (true/false/1/0) or ``str``.
    what : str
        How the user wrote them (``--config``, ``--option``), for error messages.
    """
    out = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ConfigError(what, item, "KEY=VALUE")
        if key not in types:
            raise ConfigError(f"{what} {key}", value, f"one of {sorted(types)}")
        out[key] = _convert(key, value, types[key])
    return out
