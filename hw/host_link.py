"""The accelerator behind the host link: the protocol of ``bcq.sw.contract.protocol`` over byte
streams, driving a matrix-vector engine (``bcq.hw.gemv.GEMV``).

Three components joined by streams, each doing one thing:

``i`` bytes ─► :class:`FrameReceiver` ──request──► :class:`Executor` ──header + payload──►
:class:`ReplyFramer` ─► ``o`` bytes

The receiver buffers a request whole (the payload in the frame buffer) and checks its CRC,
command and length before anything happens; the executor carries a good request out (memory
writes, or one GEMV whose results stream back in the reply) and answers a bad one with its error
status, changing nothing; the framer sends the reply. A request is held (the receiver takes no
new bytes) until its reply has been sent.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract import protocol as P
from bcq.sw.formats.errors import ConfigError

from .gemv import GEMV
from .pipeline import write_port_signature

__all__ = ["Accelerator", "FrameReceiver", "Executor", "ReplyFramer", "WordSerializer", "REQUEST", "HEADER",
           "status_payload"]

# A checked request, as the receiver hands it on: `status` is STATUS_OK or the error to reply.
REQUEST = data.StructLayout({"cmd": 8, "status": 8, "length": 16, "start": 16, "words": 16})
# A reply's header: its status and payload length (the payload bytes follow on their own stream).
HEADER = data.StructLayout({"status": 8, "length": 16})


def status_payload(engine: GEMV, build_id: int):
    """The STATUS reply payload (bytes) of an accelerator around ``engine``."""
    lay = engine.layout
    return P.status_payload(
        build_id=build_id, lanes=lay.lanes, max_rows=engine.max_rows, max_cols=engine.max_cols,
        weight_bytes=P.nbytes(lay.weight_width), scale_bytes=P.nbytes(lay.scale_width),
        beat_bytes=P.nbytes(engine.x.payload.shape().size), result_bytes=P.nbytes(engine.acc_bits),
        codebook_entries=lay.config.n_codebooks * lay.config.n_entries, entry_bits=lay.config.entry_bits,
        protocol_version=P.PROTOCOL_VERSION)


def _crc_processor(m, name):
    m.submodules[name] = crc = P.CRC.create()
    return crc


class FrameReceiver(wiring.Component):
    """Receives request frames and checks them before anything acts on them.

    Parameters
    ----------
    word_bytes : dict
        Command -> bytes per payload word (after the 2-byte start field); the known commands
        besides STATUS (which has no payload).
    limits : dict
        Command -> memory depth: a write must end inside it; GEMV: the most activation beats.
    max_rows : int
        The most rows a GEMV may ask for.
    timeout_cycles : int
        A frame whose next byte does not come within this many cycles is dropped.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Request bytes. Bytes before a sync byte (0xA5) are skipped.
    buf : ``In(write_port_signature(8, MAX_PAYLOAD))``
        Drives the frame buffer's write port: payload byte ``k`` to address ``k``.
    req : ``Out(stream.Signature(REQUEST))``
        One checked request per frame: command, status (STATUS_OK or the error found: bad CRC,
        unknown command, bad length), payload length, start field, whole words. It stays valid
        (and ``i`` is not ready) until it is taken, i.e. until the request has been answered.
    """

    def __init__(self, word_bytes, limits, max_rows, *, timeout_cycles):
        self.word_bytes, self.limits, self.max_rows = dict(word_bytes), dict(limits), max_rows
        self.timeout_cycles = timeout_cycles
        super().__init__({"i": In(stream.Signature(8)), "buf": In(write_port_signature(8, P.MAX_PAYLOAD)),
                          "req": Out(stream.Signature(REQUEST))})

    def _verdict(self, m, r, crc_ok, in_word):
        """The status of a whole frame (combinational)."""
        wsize, limit, known, ok_len, status = (Signal(8), Signal(17), Signal(), Signal(), Signal(8))
        with m.Switch(r.cmd):
            for cmd, n in self.word_bytes.items():
                with m.Case(cmd):
                    m.d.comb += [wsize.eq(n), known.eq(1), limit.eq(self.limits[cmd])]
            with m.Case(P.CMD_STATUS):
                m.d.comb += [known.eq(1), ok_len.eq(r.length == 0)]
        whole = (r.length >= 2) & (in_word == 0) & (r.words > 0)
        with m.If(r.cmd == P.CMD_GEMV):
            m.d.comb += ok_len.eq(whole & (r.words <= limit) & (r.start > 0) & (r.start <= self.max_rows))
        with m.Elif(r.cmd != P.CMD_STATUS):
            m.d.comb += ok_len.eq(whole & (r.start + r.words <= limit))
        m.d.comb += status.eq(Mux(~crc_ok, P.STATUS_BAD_CRC, Mux(~known, P.STATUS_UNKNOWN_COMMAND,
                                                                  Mux(~ok_len, P.STATUS_BAD_LENGTH, P.STATUS_OK))))
        return status, wsize

    def elaborate(self, platform):
        m = Module()
        crc = _crc_processor(m, "crc")
        r = Signal(REQUEST)
        crc_rx, in_word, idle = Signal(16), Signal(8), Signal(range(self.timeout_cycles + 1))
        byte, take = self.i.payload, Signal()
        m.d.comb += [take.eq(self.i.valid & self.i.ready), crc.data.eq(byte)]
        status, wsize = self._verdict(m, r, crc.crc == crc_rx, in_word)
        with m.If(take):       # silence in the middle of a frame drops it
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        timed_out = idle == self.timeout_cycles

        def header_byte(state, nxt, action, *, checked=True):
            with m.State(state):
                m.d.comb += self.i.ready.eq(1)
                if checked:      # the CRC covers cmd, length and payload, not itself
                    m.d.comb += crc.valid.eq(take)
                with m.If(take):
                    m.d.sync += action
                    m.next = nxt
                with m.Elif(timed_out):
                    m.next = "SYNC"

        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += [self.i.ready.eq(1), crc.start.eq(take & (byte == P.SYNC_REQUEST))]
                m.d.sync += [r.length.eq(0), r.words.eq(0), in_word.eq(0)]
                with m.If(take & (byte == P.SYNC_REQUEST)):
                    m.next = "CMD"
            header_byte("CMD", "LEN0", r.cmd.eq(byte))
            header_byte("LEN0", "LEN1", r.length[:8].eq(byte))
            header_byte("LEN1", "HDR_CHECK", r.length[8:].eq(byte))
            with m.State("HDR_CHECK"):   # a frame too long for the buffer is not read on
                with m.If(r.length > P.MAX_PAYLOAD):
                    m.d.sync += r.status.eq(P.STATUS_BAD_LENGTH)
                    m.next = "HOLD"
                with m.Elif(r.length == 0):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                pos = Signal(16)
                m.d.comb += [self.i.ready.eq(1), crc.valid.eq(take), self.buf.en.eq(take),
                             self.buf.addr.eq(pos), self.buf.data.eq(byte)]
                with m.If(take):
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(pos < 2):
                        m.d.sync += r.start.word_select(pos[0], 8).eq(byte)
                    with m.Elif(in_word == wsize - 1):   # count whole words as they arrive
                        m.d.sync += [in_word.eq(0), r.words.eq(r.words + 1)]
                    with m.Else():
                        m.d.sync += in_word.eq(in_word + 1)
                    with m.If(pos == r.length - 1):
                        m.d.sync += pos.eq(0)
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    m.d.sync += pos.eq(0)
                    m.next = "SYNC"
            header_byte("CRC0", "CRC1", crc_rx[:8].eq(byte), checked=False)
            header_byte("CRC1", "CHECK", crc_rx[8:].eq(byte), checked=False)
            with m.State("CHECK"):
                m.d.sync += r.status.eq(status)
                m.next = "HOLD"
            with m.State("HOLD"):
                m.d.comb += [self.req.valid.eq(1), self.req.payload.eq(r)]
                with m.If(self.req.ready):
                    m.next = "SYNC"
        return m


class ReplyFramer(wiring.Component):
    """Frames replies: sync byte, status, length (2 bytes), payload, CRC (2 bytes).

    Members
    -------
    hdr : ``In(stream.Signature(HEADER))``
        One header per reply (status and payload length); taken while the framer is idle.
    payload : ``In(stream.Signature(8))``
        The reply's ``length`` payload bytes, in order.
    o : ``Out(stream.Signature(8))``
        Reply bytes.
    done : ``Out(1)``
        High in the cycle in which the reply's last byte is taken from ``o``.
    """

    def __init__(self):
        super().__init__({"hdr": In(stream.Signature(HEADER)), "payload": In(stream.Signature(8)),
                          "o": Out(stream.Signature(8)), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        crc = _crc_processor(m, "crc")
        h, count = Signal(HEADER), Signal(16)
        fire = Signal()
        m.d.comb += [fire.eq(self.o.valid & self.o.ready), crc.data.eq(self.o.payload)]

        def send(state, nxt, value, *, checked=True):
            with m.State(state):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
                if checked:      # the CRC covers status, length and payload
                    m.d.comb += crc.valid.eq(fire)
                with m.If(self.o.ready):
                    m.next = nxt

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.hdr.ready.eq(1), crc.start.eq(self.hdr.valid)]
                with m.If(self.hdr.valid):
                    m.d.sync += [h.eq(self.hdr.payload), count.eq(0)]
                    m.next = "SYNC"
            send("SYNC", "STATUS", P.SYNC_REPLY, checked=False)
            send("STATUS", "LEN0", h.status)
            send("LEN0", "LEN1", h.length[:8])
            send("LEN1", "PAYLOAD", h.length[8:])
            with m.State("PAYLOAD"):
                with m.If(count == h.length):
                    m.next = "CRC0"
                with m.Else():
                    m.d.comb += [self.o.valid.eq(self.payload.valid), self.o.payload.eq(self.payload.payload),
                                 self.payload.ready.eq(self.o.ready), crc.valid.eq(fire)]
                    with m.If(fire):
                        m.d.sync += count.eq(count + 1)
            send("CRC0", "CRC1", crc.crc[:8], checked=False)
            with m.State("CRC1"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(crc.crc[8:]), self.done.eq(self.o.ready)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m


class WordSerializer(wiring.Component):
    """Little-endian bytes of ``nbytes``-byte words, one byte per cycle.

    Parameters
    ----------
    nbytes : int
        Bytes per word.

    Members
    -------
    i : ``In(stream.Signature(8 * nbytes))``
        Words; the next is taken once the previous one's bytes have all left.
    o : ``Out(stream.Signature(8))``
        Their bytes, least significant first.
    """

    def __init__(self, nbytes):
        self.nbytes = nbytes
        super().__init__({"i": In(stream.Signature(8 * nbytes)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        word, left = Signal(8 * self.nbytes), Signal(range(self.nbytes + 1))
        m.d.comb += [self.i.ready.eq(left == 0), self.o.valid.eq(left != 0), self.o.payload.eq(word[:8])]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(self.i.payload), left.eq(self.nbytes)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]
        return m


class PayloadWords(wiring.Component):
    """The words of a buffered request payload: bytes ``2 .. length - 1`` of the frame buffer
    (after the start field), ``wsize`` at a time, assembled little-endian.

    The bytes enter a shift register at its top and move down one byte per byte read: every
    flip-flop loads from its neighbour, and only the top byte from the frame buffer. (Writing
    each byte into its place of the word made the frame buffer's output drive every byte of
    the 1.5k-bit weight word, spread across the die next to the memories it feeds: the
    critical path of the 256-MAC ULX3S build, 51.8 MHz.) A word of ``n`` bytes is then the top
    ``n`` bytes; only the few low bytes that shorter words use see a multiplexer.

    Parameters
    ----------
    word_sizes : iterable of int
        The word sizes (bytes) that ``wsize`` may take.

    Members
    -------
    run : ``In(1)``
        High while words are wanted; low resets to the first word.
    length, wsize : ``In(16)``, ``In(8)``
        The payload length and bytes per word (one of ``word_sizes``); steady while ``run``.
    buf : ``In(memory.ReadPort.Signature(...))``
        Drives the frame buffer's read port (one byte per cycle, read latency 1).
    o : ``Out(stream.Signature(max(word_sizes) * 8))``
        The words, in order (bits above ``8 * wsize`` are not specified: they hold earlier bytes).
    """

    def __init__(self, word_sizes):
        self.word_sizes = sorted(set(word_sizes))
        self.max_word_bytes = max(self.word_sizes)
        addr_width = (P.MAX_PAYLOAD - 1).bit_length()
        super().__init__({"run": In(1), "length": In(16), "wsize": In(8),
                          "buf": In(memory.ReadPort.Signature(addr_width=addr_width, shape=8)),
                          "o": Out(stream.Signature(8 * self.max_word_bytes))})

    def elaborate(self, platform):
        m = Module()
        pos, in_word, have = Signal(16, init=2), Signal(8), Signal()   # have: buf.data holds byte pos-1
        last_byte = in_word == self.wsize - 1
        read = Signal()
        top = 8 * self.max_word_bytes
        shift = Signal(top)
        m.d.comb += [read.eq(self.run & ~self.o.valid & ~(have & last_byte) & (pos < self.length)),
                     self.buf.addr.eq(pos), self.buf.en.eq(read)]
        # The widest word is the register itself (no logic on its 1.5k bits); a shorter word of
        # n bytes sits in the top n bytes and is moved to the low ones by a multiplexer there.
        m.d.comb += self.o.payload.eq(shift)
        with m.Switch(self.wsize):
            for n in self.word_sizes[:-1]:
                with m.Case(n):
                    m.d.comb += self.o.payload[:8 * n].eq(shift[top - 8 * n:])
        with m.If(~self.run):
            m.d.sync += [pos.eq(2), in_word.eq(0), have.eq(0), self.o.valid.eq(0)]
        with m.Else():
            m.d.sync += have.eq(read)
            with m.If(read):
                m.d.sync += pos.eq(pos + 1)
            with m.If(have):
                m.d.sync += [shift.eq(Cat(shift[8:], self.buf.data)),
                             in_word.eq(Mux(last_byte, 0, in_word + 1))]
                with m.If(last_byte):
                    m.d.sync += self.o.valid.eq(1)
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
        return m


class Executor(wiring.Component):
    """Carries out checked requests against the engine and hands the reply to the framer.

    Parameters
    ----------
    engine : :class:`bcq.hw.gemv.GEMV`
        The engine driven (its widths and depths set the word sizes).
    status : bytes
        The STATUS reply payload.

    Members
    -------
    req : ``In(stream.Signature(REQUEST))``
        A checked request; taken once its reply has been sent (``done``).
    buf : ``In(memory.ReadPort.Signature(...))``
        Drives the frame buffer's read port (payload bytes).
    cbw, wmem, smem : flipped write-port signatures
        Drive the engine's codebook, weight and scale write ports.
    x : ``Out(stream.Signature(engine activation layout))``, ``rows`` : ``Out(...)``
        The activation beats and row count of a GEMV.
    res : ``In(stream.Signature(engine result layout))``
        The engine's results, one per row.
    hdr, payload : ``Out(stream.Signature(HEADER))``, ``Out(stream.Signature(8))``
        The reply for the framer; ``done`` (``In(1)``) reports it sent.
    """

    def __init__(self, engine: GEMV, status: bytes):
        self.engine, self.status = engine, status
        e = engine
        self.word_bytes = {P.CMD_WRITE_CODEBOOK: 1, P.CMD_WRITE_WEIGHTS: P.nbytes(e.layout.weight_width),
                           P.CMD_WRITE_SCALES: P.nbytes(e.layout.scale_width),
                           P.CMD_GEMV: P.nbytes(e.x.payload.shape().size)}
        self.result_bytes = P.nbytes(e.acc_bits)
        sig = e.signature.members
        super().__init__({
            "req": In(stream.Signature(REQUEST)),
            "buf": In(memory.ReadPort.Signature(addr_width=(P.MAX_PAYLOAD - 1).bit_length(), shape=8)),
            "cbw": In(sig["cbw"].signature), "wmem": In(sig["wmem"].signature), "smem": In(sig["smem"].signature),
            "x": Out(stream.Signature(e.x.payload.shape())), "rows": Out(sig["rows"].shape),
            "res": In(stream.Signature(e.o.payload.shape())),
            "hdr": Out(stream.Signature(HEADER)), "payload": Out(stream.Signature(8)), "done": In(1)})

    def elaborate(self, platform):
        m = Module()
        r = self.req.payload
        m.submodules.words = words = PayloadWords(self.word_bytes.values())
        m.submodules.status_bytes = sb = WordSerializer(len(self.status))
        m.submodules.result_bytes = rb = WordSerializer(self.result_bytes)
        wiring.connect(m, wiring.flipped(self.buf), words.buf)
        m.d.comb += [words.length.eq(r.length), self.rows.eq(r.start), sb.i.payload.eq(int.from_bytes(self.status, "little")),
                     rb.i.payload.eq(self.res.payload.value), rb.i.valid.eq(self.res.valid), self.res.ready.eq(rb.i.ready)]
        with m.Switch(r.cmd):
            for cmd, n in self.word_bytes.items():
                with m.Case(cmd):
                    m.d.comb += words.wsize.eq(n)
        count, word = Signal(16), words.o.payload
        is_last = count == r.words - 1
        targets = {P.CMD_WRITE_CODEBOOK: self.cbw, P.CMD_WRITE_WEIGHTS: self.wmem, P.CMD_WRITE_SCALES: self.smem}
        # Address and data go to every memory whatever the command (only the enable is decoded):
        # gating the 1.6k-bit weight word by the command put the decode on a reset input of every
        # one of its flip-flops, across the die (the critical path of a 4-row ULX3S build).
        for port in targets.values():
            m.d.comb += [port.addr.eq(r.start + count), port.data.eq(word)]
        m.d.comb += [self.x.payload.as_value().eq(word), self.x.payload.last.eq(is_last)]
        # The reply's length, registered (the request holds still from IDLE on) and multiplied by
        # shifts: a constant ``*`` became a MULT18X18D in the reply path that the placer put
        # across the die from the framer (a 21 ns path, 47 MHz, in a 256-MAC ULX3S build).
        length = Signal(len(self.hdr.payload.length))
        k = self.result_bytes
        rows_bytes = sum(r.start << i for i in range(k.bit_length()) if k >> i & 1)
        m.d.sync += length.eq(Mux(r.status != P.STATUS_OK, 0, Mux(r.cmd == P.CMD_STATUS, len(self.status),
                                                                  Mux(r.cmd == P.CMD_GEMV, rows_bytes, 0))))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.req.valid):
                    m.d.sync += count.eq(0)
                    with m.If(r.status != P.STATUS_OK):
                        m.next = "HEADER"
                    with m.Elif(r.cmd == P.CMD_STATUS):
                        m.next = "STATUS"
                    with m.Else():
                        m.next = "WORDS"
            with m.State("WORDS"):      # each word to its memory, or to the engine's activation stream
                m.d.comb += words.run.eq(1)
                with m.Switch(r.cmd):
                    for cmd, port in targets.items():
                        with m.Case(cmd):
                            m.d.comb += [port.en.eq(words.o.valid), words.o.ready.eq(1)]
                    with m.Case(P.CMD_GEMV):
                        m.d.comb += [self.x.valid.eq(words.o.valid), words.o.ready.eq(self.x.ready)]
                with m.If(words.o.valid & words.o.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(is_last):
                        m.next = "HEADER"
            with m.State("STATUS"):     # the status bytes wait in their serializer
                m.d.comb += sb.i.valid.eq(1)
                with m.If(sb.i.ready):
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [self.hdr.valid.eq(1), self.hdr.payload.status.eq(r.status), self.hdr.payload.length.eq(length)]
                with m.If(self.hdr.ready):
                    m.next = "REPLY"
            with m.State("REPLY"):
                source = Mux(r.cmd == P.CMD_STATUS, 0, 1)
                for k, ser in enumerate((sb, rb)):
                    with m.If(source == k):
                        m.d.comb += [self.payload.valid.eq(ser.o.valid), self.payload.payload.eq(ser.o.payload),
                                     ser.o.ready.eq(self.payload.ready)]
                with m.If(self.done):
                    m.d.comb += self.req.ready.eq(1)
                    m.next = "IDLE"
        return m


class Accelerator(wiring.Component):
    """Engine + protocol over byte streams ``i`` (requests) and ``o`` (replies).

    Parameters
    ----------
    layout, max_rows, max_cols, codebooks, image, multiplier_rows
        The engine's (:class:`bcq.hw.gemv.GEMV`).
    build_id : int
        32 bits, reported by STATUS.
    timeout_cycles : int
        A frame whose next byte does not come within this many cycles is dropped.

    Members
    -------
    i : ``In(stream.Signature(8))``, o : ``Out(stream.Signature(8))``
        Request and reply bytes.
    busy : ``Out(1)``
        High from a request's last byte until its reply has been sent.
    """

    def __init__(self, layout, *, max_rows, max_cols, codebooks=None, image=None, build_id=0,
                 timeout_cycles=1 << 16, multiplier_rows=None):
        if not isinstance(build_id, int) or not 0 <= build_id < 1 << 32:
            raise ConfigError("build_id", build_id, "a 32-bit unsigned integer")
        self.engine = GEMV(layout, max_rows=max_rows, max_cols=max_cols, codebooks=codebooks, image=image,
                           multiplier_rows=multiplier_rows)
        self.build_id, self.timeout_cycles = build_id, timeout_cycles
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        eng = self.engine
        m.submodules.engine = eng
        m.submodules.executor = ex = Executor(eng, status_payload(eng, self.build_id))
        limits = {P.CMD_WRITE_CODEBOOK: eng.layout.config.n_codebooks * eng.layout.config.n_entries,
                  P.CMD_WRITE_WEIGHTS: eng.weight_depth, P.CMD_WRITE_SCALES: eng.scale_depth,
                  P.CMD_GEMV: eng.xbuf_depth}
        m.submodules.receiver = rx = FrameReceiver(ex.word_bytes, limits, eng.max_rows,
                                                   timeout_cycles=self.timeout_cycles)
        m.submodules.framer = tx = ReplyFramer()
        m.submodules.frame_buffer = buf = memory.Memory(shape=8, depth=P.MAX_PAYLOAD, init=[])
        wiring.connect(m, rx.buf, buf.write_port())
        wiring.connect(m, ex.buf, buf.read_port())
        wiring.connect(m, wiring.flipped(self.i), rx.i)
        wiring.connect(m, rx.req, ex.req)
        for name in ("cbw", "wmem", "smem", "x"):
            wiring.connect(m, getattr(ex, name), getattr(eng, name))
        wiring.connect(m, eng.o, ex.res)
        wiring.connect(m, ex.hdr, tx.hdr)
        wiring.connect(m, ex.payload, tx.payload)
        wiring.connect(m, tx.o, wiring.flipped(self.o))
        m.d.comb += [eng.rows.eq(ex.rows), ex.done.eq(tx.done), self.busy.eq(rx.req.valid)]
        return m
