"""Helpers shared by the tests."""
import re

from bcq.sw.contract import protocol as P


def exactly(message):
    """A ``pytest.raises(..., match=...)`` pattern that matches ``message`` whole and literally:
    an error's text is part of the interface, so tests check all of it."""
    return "^" + re.escape(message) + "$"


def reply(payload=b"", status=P.STATUS_OK):
    """A reply frame as the protocol defines it."""
    body = bytes([status]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([P.SYNC_REPLY]) + body + P.crc16(body).to_bytes(2, "little")


class Board:
    """A scripted transport: each request written gets the next scripted reply (bytes, or a
    function of the request returning bytes); ``read`` hands out what is queued, at most
    ``chunk`` bytes a call."""

    def __init__(self, *replies, chunk=None):
        self.replies, self.chunk = list(replies), chunk
        self.queued, self.requests = bytearray(), []

    def write(self, data):
        self.requests.append(bytes(data))
        if self.replies:
            r = self.replies.pop(0)
            self.queued += r(bytes(data)) if callable(r) else r

    def read(self, n):
        n = min(n, self.chunk or n)
        data = bytes(self.queued[:n])
        del self.queued[:n]
        return data
