"""The accelerator behind the host link: the protocol of ``sw.protocol`` over byte streams,
driving a matrix-vector engine (``hw.gemv.GEMV``).

A request is received whole into a frame buffer and its CRC, command and length are checked
before anything happens; then it executes (memory writes, or one GEMV whose results stream
back in the reply). Framing errors get an error reply and change nothing.
"""

from amaranth import Array, Cat, Const, Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sw import protocol as P
from sw.errors import ConfigError

from .gemv import GEMV

__all__ = ["Accelerator", "crc16_next", "status_payload"]


def _crc_step(crc, byte):
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


# One CRC step is linear over GF(2) in the 16 CRC bits and 8 data bits: output bit i is the XOR of
# the inputs whose unit vector sets it. (An unrolled shift/xor loop makes an expression tree that
# doubles with every bit.)
_CRC_TAPS = [[j for j in range(24) if (_crc_step(1 << j, 0) if j < 16 else _crc_step(0, 1 << (j - 16))) >> i & 1]
             for i in range(16)]


def crc16_next(crc, byte):
    """Amaranth expression: CRC-16/CCITT-FALSE after one more byte (see sw.protocol.crc16)."""
    bits = Cat(crc, byte)
    return Cat(*[Cat(*[bits[j] for j in taps]).xor() for taps in _CRC_TAPS])


def status_payload(engine: GEMV, build_id: int):
    lay = engine.layout
    cfg = lay.config
    fields = [(build_id, 4), (lay.lanes, 1), (engine.max_rows, 2), (engine.max_cols, 2),
              (P.nbytes(lay.weight_width), 1), (P.nbytes(lay.scale_width), 1),
              (P.nbytes(engine.x.payload.shape().size), 1), (P.nbytes(engine.acc_bits), 1),
              (cfg.n_codebooks * 16, 2), (cfg.entry_bits, 1), (P.PROTOCOL_VERSION, 1)]
    return b"".join(v.to_bytes(n, "little") for v, n in fields)


class Accelerator(wiring.Component):
    """Engine + protocol over byte streams ``i`` (requests) and ``o`` (replies).

    Parameters: the engine's (``layout``, ``max_rows``, ``max_cols``, ``codebooks``, ``image``),
    ``build_id`` (32 bits, reported by STATUS) and ``timeout_cycles``: a frame whose next byte
    does not come within this many cycles is dropped.
    """

    def __init__(self, layout, *, max_rows, max_cols, codebooks=None, image=None, build_id=0,
                 timeout_cycles=1 << 16):
        if not isinstance(build_id, int) or not 0 <= build_id < 1 << 32:
            raise ConfigError("build_id", build_id, "a 32-bit unsigned integer")
        self.engine = GEMV(layout, max_rows=max_rows, max_cols=max_cols, codebooks=codebooks, image=image)
        self.build_id, self.timeout_cycles = build_id, timeout_cycles
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8)), "busy": Out(1)})

    @property
    def word_bytes(self):
        e = self.engine
        return {P.CMD_WRITE_CODEBOOK: 1, P.CMD_WRITE_WEIGHTS: P.nbytes(e.layout.weight_width),
                P.CMD_WRITE_SCALES: P.nbytes(e.layout.scale_width),
                P.CMD_GEMV: P.nbytes(e.x.payload.shape().size)}

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        wb = self.word_bytes
        depth = {P.CMD_WRITE_CODEBOOK: eng.layout.config.n_codebooks * 16, P.CMD_WRITE_WEIGHTS: eng.weight_depth,
                 P.CMD_WRITE_SCALES: eng.scale_depth, P.CMD_GEMV: eng.xbuf_depth}
        res_bytes = P.nbytes(eng.acc_bits)
        max_word = max(wb.values()) * 8

        m.submodules.buf = buf = memory.Memory(shape=8, depth=P.MAX_PAYLOAD, init=[])
        bw, br = buf.write_port(), buf.read_port()

        cmd = Signal(8)
        length = Signal(16)
        pos = Signal(16)                 # payload bytes received / read back
        crc = Signal(16, init=0xFFFF)
        crc_rx = Signal(16)
        start = Signal(16)               # first payload field: start address, or rows for GEMV
        wsize = Signal(range(max(wb.values()) + 1))
        in_word = Signal(range(max(wb.values()) + 1))
        words = Signal(16)
        known = Signal()
        limit = Signal(17)
        status = Signal(8)
        idle = Signal(range(self.timeout_cycles + 1))
        fsm_sync = Signal()

        # -- receive and check -------------------------------------------------------------
        byte = self.i.payload
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        with m.Switch(cmd):
            for c, n in wb.items():
                with m.Case(c):
                    m.d.comb += [wsize.eq(n), known.eq(1), limit.eq(depth[c])]
            with m.Case(P.CMD_STATUS):
                m.d.comb += known.eq(1)

        # -- execute --------------------------------------------------------------------------
        word = Signal(max_word)
        rd_valid = Signal()              # br.data holds payload byte pos-1
        word_count = Signal(16)
        pending = Signal()               # `word` complete, waiting to be written / accepted
        beats_sent = Signal(16)

        # -- reply -------------------------------------------------------------------------------
        tx_len = Signal(16)
        tx_count = Signal(16)
        status_bytes = Array(Const(b, 8) for b in status_payload(eng, self.build_id))
        res_shift = Signal(res_bytes * 8)
        res_left = Signal(range(res_bytes + 1))
        rows = Signal(range(eng.max_rows + 1))
        m.d.comb += eng.rows.eq(rows)

        def send(value, next_state, update_crc=True):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
            with m.If(self.o.ready):
                if update_crc:
                    m.d.sync += crc.eq(crc16_next(crc, value))
                m.next = next_state

        # Silence in the middle of a request drops it: `idle` counts cycles since the last byte.
        with m.If(take):
            m.d.sync += idle.eq(0)
        with m.Elif(~fsm_sync):
            m.d.sync += idle.eq(idle + 1)

        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += [self.i.ready.eq(1), fsm_sync.eq(1)]
                m.d.sync += [crc.eq(0xFFFF), pos.eq(0), in_word.eq(0), words.eq(0), idle.eq(0)]
                with m.If(take & (byte == P.SYNC_REQUEST)):
                    m.next = "CMD"
            for st, nxt, action in (("CMD", "LEN0", lambda: cmd.eq(byte)),
                                    ("LEN0", "LEN1", lambda: length[:8].eq(byte)),
                                    ("LEN1", "HDR_CHECK", lambda: length[8:].eq(byte))):
                with m.State(st):
                    m.d.comb += self.i.ready.eq(1)
                    with m.If(take):
                        m.d.sync += [action(), crc.eq(crc16_next(crc, byte))]
                        m.next = nxt
                    with m.Elif(idle == self.timeout_cycles):
                        m.next = "SYNC"
            with m.State("HDR_CHECK"):
                with m.If(length > P.MAX_PAYLOAD):
                    m.d.sync += status.eq(P.STATUS_BAD_LENGTH)
                    m.next = "REPLY_ERROR"
                with m.Elif(length == 0):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.i.ready.eq(1), bw.addr.eq(pos), bw.data.eq(byte), bw.en.eq(take)]
                with m.If(take):
                    m.d.sync += [pos.eq(pos + 1), crc.eq(crc16_next(crc, byte))]
                    with m.If(pos == 0):
                        m.d.sync += start[:8].eq(byte)
                    with m.Elif(pos == 1):
                        m.d.sync += start[8:].eq(byte)
                    with m.Else():  # count whole words as they arrive (no division needed)
                        with m.If(in_word == wsize - 1):
                            m.d.sync += [in_word.eq(0), words.eq(words + 1)]
                        with m.Else():
                            m.d.sync += in_word.eq(in_word + 1)
                    with m.If(pos == length - 1):
                        m.next = "CRC0"
                with m.Elif(idle == self.timeout_cycles):
                    m.next = "SYNC"
            for st, nxt, sl in (("CRC0", "CRC1", slice(0, 8)), ("CRC1", "CHECK", slice(8, 16))):
                with m.State(st):
                    m.d.comb += self.i.ready.eq(1)
                    with m.If(take):
                        m.d.sync += crc_rx[sl].eq(byte)
                        m.next = nxt
                    with m.Elif(idle == self.timeout_cycles):
                        m.next = "SYNC"
            with m.State("CHECK"):
                ok_len = Signal()
                with m.If(cmd == P.CMD_STATUS):
                    m.d.comb += ok_len.eq(length == 0)
                with m.Elif(cmd == P.CMD_GEMV):
                    m.d.comb += ok_len.eq((length >= 2) & (in_word == 0) & (words > 0) & (words <= limit)
                                          & (start > 0) & (start <= eng.max_rows))
                with m.Else():
                    m.d.comb += ok_len.eq((length >= 2) & (in_word == 0) & (words > 0) & (start + words <= limit))
                m.d.sync += [crc.eq(0xFFFF), pos.eq(2), rd_valid.eq(0), word_count.eq(0), in_word.eq(0),
                             pending.eq(0), beats_sent.eq(0)]
                with m.If(crc_rx != crc):
                    m.d.sync += status.eq(P.STATUS_BAD_CRC)
                    m.next = "REPLY_ERROR"
                with m.Elif(~known):
                    m.d.sync += status.eq(P.STATUS_UNKNOWN_COMMAND)
                    m.next = "REPLY_ERROR"
                with m.Elif(~ok_len):
                    m.d.sync += status.eq(P.STATUS_BAD_LENGTH)
                    m.next = "REPLY_ERROR"
                with m.Elif(cmd == P.CMD_STATUS):
                    m.d.sync += [status.eq(P.STATUS_OK), tx_len.eq(len(status_payload(eng, self.build_id)))]
                    m.next = "REPLY_SYNC"
                with m.Else():
                    m.d.sync += status.eq(P.STATUS_OK)
                    with m.If(cmd == P.CMD_GEMV):
                        m.d.sync += rows.eq(start)
                    m.next = "EXEC"
            with m.State("EXEC"):
                # Read payload bytes in order; assemble little-endian words; write or stream them.
                m.d.comb += self.busy.eq(1)
                can_read = Signal()
                completing = rd_valid & (in_word == wsize - 1)  # this cycle's byte ends a word
                m.d.comb += [can_read.eq(~pending & ~completing & (pos < length)),
                             br.addr.eq(pos), br.en.eq(can_read)]
                with m.If(can_read):
                    m.d.sync += pos.eq(pos + 1)
                m.d.sync += rd_valid.eq(can_read)
                with m.If(rd_valid):
                    m.d.sync += word.word_select(in_word, 8).eq(br.data)  # little-endian bytes
                    with m.If(in_word == wsize - 1):
                        m.d.sync += [in_word.eq(0), pending.eq(1)]
                    with m.Else():
                        m.d.sync += in_word.eq(in_word + 1)
                addr = start + word_count
                with m.If(pending):
                    with m.Switch(cmd):
                        with m.Case(P.CMD_WRITE_CODEBOOK):
                            m.d.comb += [eng.cbw.en.eq(1), eng.cbw.addr.eq(addr), eng.cbw.data.eq(word[:8])]
                        with m.Case(P.CMD_WRITE_WEIGHTS):
                            m.d.comb += [eng.wmem.en.eq(1), eng.wmem.addr.eq(addr), eng.wmem.data.eq(word)]
                        with m.Case(P.CMD_WRITE_SCALES):
                            m.d.comb += [eng.smem.en.eq(1), eng.smem.addr.eq(addr), eng.smem.data.eq(word)]
                        with m.Case(P.CMD_GEMV):
                            xp = eng.x.payload
                            m.d.comb += [eng.x.valid.eq(1), xp.as_value().eq(word),
                                         xp.last.eq(word_count == words - 1)]
                    accepted = (cmd != P.CMD_GEMV) | eng.x.ready
                    with m.If(accepted):
                        m.d.sync += [pending.eq(0), word_count.eq(word_count + 1)]
                        with m.If(word_count == words - 1):
                            m.d.sync += tx_len.eq(0)
                            with m.If(cmd == P.CMD_GEMV):
                                m.d.sync += tx_len.eq(start * res_bytes)
                            m.next = "REPLY_SYNC"
            with m.State("REPLY_ERROR"):
                m.d.sync += [tx_len.eq(0), crc.eq(0xFFFF)]
                m.next = "REPLY_SYNC"
            with m.State("REPLY_SYNC"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [tx_count.eq(0), res_left.eq(0)]
                send(P.SYNC_REPLY, "REPLY_STATUS", update_crc=False)
            with m.State("REPLY_STATUS"):
                m.d.comb += self.busy.eq(1)
                send(status, "REPLY_LEN0")
            with m.State("REPLY_LEN0"):
                m.d.comb += self.busy.eq(1)
                send(tx_len[:8], "REPLY_LEN1")
            with m.State("REPLY_LEN1"):
                m.d.comb += self.busy.eq(1)
                with m.If(tx_len == 0):
                    send(tx_len[8:], "REPLY_CRC0")
                with m.Else():
                    send(tx_len[8:], "REPLY_PAYLOAD")
            with m.State("REPLY_PAYLOAD"):
                m.d.comb += self.busy.eq(1)
                last_byte = tx_count == tx_len - 1
                with m.If(cmd == P.CMD_STATUS):
                    with m.If(self.o.ready):
                        m.d.sync += tx_count.eq(tx_count + 1)
                    send(status_bytes[tx_count], "REPLY_PAYLOAD")
                    with m.If(self.o.ready & last_byte):
                        m.next = "REPLY_CRC0"
                with m.Else():  # GEMV results, row by row, little-endian
                    with m.If(res_left == 0):
                        m.d.comb += eng.o.ready.eq(1)
                        with m.If(eng.o.valid):
                            m.d.sync += [res_shift.eq(eng.o.payload.value), res_left.eq(res_bytes)]
                    with m.Else():
                        send(res_shift[:8], "REPLY_PAYLOAD")
                        with m.If(self.o.ready):
                            m.d.sync += [res_shift.eq(res_shift >> 8), res_left.eq(res_left - 1),
                                         tx_count.eq(tx_count + 1)]
                            with m.If(last_byte):
                                m.next = "REPLY_CRC0"
            with m.State("REPLY_CRC0"):
                m.d.comb += self.busy.eq(1)
                send(crc[:8], "REPLY_CRC1", update_crc=False)
            with m.State("REPLY_CRC1"):
                m.d.comb += self.busy.eq(1)
                send(crc[8:], "SYNC", update_crc=False)
        return m
