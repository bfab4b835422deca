"""Host link protocol of the board top (UART), defined once: the gateware (``hw.host_link``)
reads these constants, the host driver (``sw.driver``) builds and parses frames with these
functions.

Request:  0xA5, cmd, len (2 bytes LE), payload (len bytes), CRC-16 (2 bytes LE) of cmd..payload
Reply:    0x5A, status, len (2 bytes LE), payload, CRC-16 (2 bytes LE) of status..payload
CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor).

A request's payload is buffered whole and checked before it acts: a bad CRC, an unknown command
or a bad length changes nothing and gets an error reply. A frame that stops arriving is dropped
after ``IDLE_TIMEOUT_BYTES`` byte times of silence, so the link never hangs.

Commands (multi-byte integers little-endian; word sizes are the engine's widths rounded up to
bytes and reported by STATUS):
- STATUS: no payload. Reply: build id (4), lanes (1), max_rows (2), max_cols (2),
  weight word bytes (1), scale word bytes (1), activation beat bytes (1), result bytes (1),
  codebook entries (2), entry bits (1), protocol version (1).
- WRITE_CODEBOOK: start entry (2), then one byte per entry (two's complement). Reply: empty.
- WRITE_WEIGHTS / WRITE_SCALES: start address (2), then whole words. Reply: empty.
- GEMV: rows (2), then the activation beats. Reply: rows x result bytes, row order.
"""

SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
PROTOCOL_VERSION = 1
MAX_PAYLOAD = 2048
IDLE_TIMEOUT_BYTES = 64

CMD_STATUS = 0x01
CMD_WRITE_CODEBOOK = 0x02
CMD_WRITE_WEIGHTS = 0x03
CMD_WRITE_SCALES = 0x04
CMD_GEMV = 0x05
COMMANDS = {CMD_STATUS: "STATUS", CMD_WRITE_CODEBOOK: "WRITE_CODEBOOK", CMD_WRITE_WEIGHTS: "WRITE_WEIGHTS",
            CMD_WRITE_SCALES: "WRITE_SCALES", CMD_GEMV: "GEMV"}

STATUS_OK = 0
STATUS_BAD_CRC = 1
STATUS_UNKNOWN_COMMAND = 2
STATUS_BAD_LENGTH = 3
STATUS_NAMES = {STATUS_OK: "ok", STATUS_BAD_CRC: "bad CRC", STATUS_UNKNOWN_COMMAND: "unknown command",
                STATUS_BAD_LENGTH: "bad length"}


def crc16(data, crc=0xFFFF):
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def request(cmd, payload=b""):
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = bytes([cmd]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + crc16(body).to_bytes(2, "little")


def parse_reply(frame):
    """(status, payload) of a whole reply frame; ValueError on damage."""
    if len(frame) < 6 or frame[0] != SYNC_REPLY:
        raise ValueError("reply does not start with the sync byte")
    n = int.from_bytes(frame[2:4], "little")
    if len(frame) != 6 + n:
        raise ValueError(f"reply of {len(frame)} bytes, header says {6 + n}")
    if crc16(frame[1:4 + n]) != int.from_bytes(frame[4 + n:6 + n], "little"):
        raise ValueError("reply CRC mismatch")
    return frame[1], frame[4:4 + n]


def nbytes(bits):
    return (bits + 7) // 8
