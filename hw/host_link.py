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

With an activation encoder (``encoder_lanes``), GEMV_BF16 runs one layer BF16 in, BF16 out:

payload words ─► BF16 beats ─► :class:`bcq.hw.bcq_encoder.BCQEncoder` ─► engine ``x``;
engine ``o`` ─► :class:`bcq.hw.output_float.OutputFloat` ─► 2-byte results ─► reply
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract import protocol as P
from bcq.sw.formats.errors import ConfigError

from .bcq_encoder import BCQEncoder
from .gemv import GEMV
from .output_float import OutputFloat
from .engine_rows import delay
from .pipeline import copy_tree, registered_write, skid_buffer, write_port_signature

__all__ = ["Accelerator", "FrameReceiver", "Executor", "ReplyFramer", "WordSerializer", "REQUEST", "HEADER",
           "status_payload"]

# A checked request, as the receiver hands it on: `status` is STATUS_OK or the error to reply.
REQUEST = data.StructLayout({"cmd": 8, "status": 8, "length": 16, "start": 16, "words": 16})
# A reply's header: its status and payload length (the payload bytes follow on their own stream).
HEADER = data.StructLayout({"status": 8, "length": 16})


def status_payload(engine: GEMV, build_id: int, encoder_lanes: int = 0):
    """The STATUS reply payload (bytes) of an accelerator around ``engine`` (with an activation
    encoder of ``encoder_lanes`` lanes, 0: none)."""
    lay = engine.layout
    return P.status_payload(
        build_id=build_id, lanes=lay.lanes, max_rows=engine.max_rows, max_cols=engine.max_cols,
        weight_bytes=P.nbytes(lay.weight_width), scale_bytes=P.nbytes(lay.scale_width),
        beat_bytes=P.nbytes(engine.x.payload.shape().size), result_bytes=P.nbytes(engine.acc_bits),
        codebook_entries=lay.config.n_codebooks * lay.config.n_entries, entry_bits=lay.config.entry_bits,
        encoder_lanes=encoder_lanes, protocol_version=P.PROTOCOL_VERSION)


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
        Command -> memory depth: a write must end inside it; GEMV: the most activation beats;
        GEMV_BF16: the most words (the exponents word and ``max_cols`` scalars).
    max_rows : int
        The most rows a GEMV may ask for.
    timeout_cycles : int
        A frame whose next byte does not come within this many cycles is dropped.
    array_len : int or None
        LA: a GEMV_BF16 vector must be a positive whole number of block arrays (None: no
        GEMV_BF16 command).

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

    def __init__(self, word_bytes, limits, max_rows, *, timeout_cycles, array_len=None):
        self.word_bytes, self.limits, self.max_rows = dict(word_bytes), dict(limits), max_rows
        self.timeout_cycles, self.array_len = timeout_cycles, array_len
        super().__init__({"i": In(stream.Signature(8)), "buf": In(write_port_signature(8, P.MAX_PAYLOAD)),
                          "req": Out(stream.Signature(REQUEST))})

    def _verdict(self, m, r, crc_ok, in_word, in_array):
        """The status of a whole frame, one clock edge after its inputs (its three conditions are
        registers: with the command decode, length compares and CRC compare in one cycle, this
        was 13 ns of logic), and the command's word size minus one (registered too: the command
        byte comes several cycles before the payload)."""
        wsize, limit, known, ok_len, status = (Signal(8), Signal(17), Signal(), Signal(), Signal(8))
        with m.Switch(r.cmd):
            for cmd, n in self.word_bytes.items():
                with m.Case(cmd):
                    m.d.comb += [wsize.eq(n), known.eq(1), limit.eq(self.limits[cmd])]
            with m.Case(P.CMD_STATUS):
                m.d.comb += known.eq(1)
        # The command's decode in registers too (the command byte is long in when they are read).
        limit_q = Signal(17, name="limit_q")
        is_cmd = {c: Signal(name=f"rx_is_cmd_{c:02x}") for c in (P.CMD_GEMV, P.CMD_GEMV_BF16, P.CMD_STATUS)}
        m.d.sync += [limit_q.eq(limit)] + [f.eq(r.cmd == c) for c, f in is_cmd.items()]
        whole = (r.length >= 2) & (in_word == 0) & (r.words > 0)
        rows_ok = (r.start > 0) & (r.start <= self.max_rows)
        limit = limit_q
        with m.If(is_cmd[P.CMD_STATUS]):
            m.d.comb += ok_len.eq(r.length == 0)
        with m.Elif(is_cmd[P.CMD_GEMV]):
            m.d.comb += ok_len.eq(whole & (r.words <= limit) & rows_ok)
        with m.Elif(is_cmd[P.CMD_GEMV_BF16]):
            # The exponents word, then whole block arrays: words - 1 a positive multiple of LA.
            if self.array_len is not None:
                m.d.comb += ok_len.eq(whole & (r.words >= 2) & (r.words <= limit) & rows_ok
                                      & (in_array == 1 % self.array_len))
        with m.Else():
            m.d.comb += ok_len.eq(whole & (r.start + r.words <= limit))
        crc_q, known_q, ok_len_q = Signal(name="crc_ok_q"), Signal(name="known_q"), Signal(name="ok_len_q")
        last_in_word = Signal(8, name="wsize_last")
        m.d.sync += [crc_q.eq(crc_ok), known_q.eq(known), ok_len_q.eq(ok_len), last_in_word.eq(wsize - 1)]
        m.d.comb += status.eq(Mux(~crc_q, P.STATUS_BAD_CRC, Mux(~known_q, P.STATUS_UNKNOWN_COMMAND,
                                                                Mux(~ok_len_q, P.STATUS_BAD_LENGTH, P.STATUS_OK))))
        return status, last_in_word

    def elaborate(self, platform):
        m = Module()
        crc = _crc_processor(m, "crc")
        r = Signal(REQUEST)
        # The request is its register, not gated by the state (``valid`` says when it counts): the
        # state's decode in front of every field of it reached the executor's and the engine's
        # registers that hold the length and the rows (13.1 ns in a routed 256-MAC ULX3S build).
        m.d.comb += self.req.payload.eq(r)
        crc_rx, in_word, idle = Signal(16), Signal(8), Signal(range(self.timeout_cycles + 1))
        la = self.array_len or 1
        # Whole words modulo LA (GEMV_BF16's length check); at least 1 bit wide.
        in_array = Signal(range(max(2, la)))
        last_pos = Signal(16, name="last_pos")   # the payload's last byte: length - 1
        byte, take = self.i.payload, Signal()
        m.d.comb += [take.eq(self.i.valid & self.i.ready), crc.data.eq(byte)]
        status, last_in_word = self._verdict(m, r, crc.crc == crc_rx, in_word, in_array)
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
                m.d.sync += [r.length.eq(0), r.words.eq(0), in_word.eq(0), in_array.eq(0)]
                with m.If(take & (byte == P.SYNC_REQUEST)):
                    m.next = "CMD"
            header_byte("CMD", "LEN0", r.cmd.eq(byte))
            header_byte("LEN0", "LEN1", r.length[:8].eq(byte))
            header_byte("LEN1", "HDR_CHECK", r.length[8:].eq(byte))
            with m.State("HDR_CHECK"):   # a frame too long for the buffer is not read on
                m.d.sync += last_pos.eq(r.length - 1)
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
                    with m.Elif(in_word == last_in_word):   # count whole words as they arrive
                        m.d.sync += [in_word.eq(0), r.words.eq(r.words + 1),
                                     in_array.eq(Mux(in_array == la - 1, 0, in_array + 1))]
                    with m.Else():
                        m.d.sync += in_word.eq(in_word + 1)
                    with m.If(pos == last_pos):
                        m.d.sync += pos.eq(0)
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    m.d.sync += pos.eq(0)
                    m.next = "SYNC"
            header_byte("CRC0", "CRC1", crc_rx[:8].eq(byte), checked=False)
            header_byte("CRC1", "COMPARE", crc_rx[8:].eq(byte), checked=False)
            with m.State("COMPARE"):    # the verdict's registers take the complete frame
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += r.status.eq(status)
                m.next = "HOLD"
            with m.State("HOLD"):
                m.d.comb += self.req.valid.eq(1)
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

    # Edges between a byte's read data and its shift into the word: the shift enable reaches
    # the word's flip-flops through two levels of copy trees (16 copies, each driving about 100
    # of them), and the byte through as many registers.
    shift_lag = 4

    def elaborate(self, platform):
        m = Module()
        pos, in_word, have = Signal(16, init=2), Signal(8), Signal()   # have: buf.data holds byte pos-1
        pending = Signal()   # a word's last byte is read and the word not yet taken from ``o``
        # Registered conditions (the word size's compare and the length's in one cycle before the
        # frame buffer's read enable made 13.8 ns in a routed 256-MAC build): ``last_byte`` is
        # ``in_word == wsize - 1`` and ``more`` is ``pos < length``, each for the registers' values.
        last_byte, more = Signal(name="last_byte"), Signal(name="more_bytes")
        read = Signal()
        top = 8 * self.max_word_bytes
        m.d.comb += [read.eq(self.run & ~pending & ~(have & last_byte) & more),
                     self.buf.addr.eq(pos), self.buf.en.eq(read)]
        # The shift register: byte lanes in up to 16 segments, each with its own copy of the
        # enable (a single enable net reached the word's 1.6k flip-flops, spread across the die
        # next to the memories they feed, from a LUT in 12.8 ns: the critical path of a routed
        # 256-MAC ULX3S build, 51.6 MHz). A shift lands ``shift_lag`` edges after its ``have``;
        # shifts while ``run`` is low only move bytes that the next word overwrites.
        en = [c2 for k, c1 in enumerate(copy_tree(m, have, "shift_en", 4)) for c2 in copy_tree(m, c1, f"shift_en{k}", 4)]
        byte = delay(m, self.buf.data, self.shift_lag, "shift_byte")
        n_bytes = self.max_word_bytes
        seg = -(-n_bytes // len(en))
        lanes = [Signal(8, name=f"word_b{k}") for k in range(n_bytes)]
        for k in range(n_bytes):
            with m.If(en[min(k // seg, len(en) - 1)]):
                m.d.sync += lanes[k].eq(byte if k == n_bytes - 1 else lanes[k + 1])
        shift = Cat(*lanes)
        # The widest word is the register itself (no logic on its 1.5k bits); a shorter word of
        # n bytes sits in the top n bytes and is moved to the low ones by a multiplexer there.
        m.d.comb += self.o.payload.eq(shift)
        with m.Switch(self.wsize):
            for n in self.word_sizes[:-1]:
                with m.Case(n):
                    m.d.comb += self.o.payload[:8 * n].eq(shift[top - 8 * n:])
        # The word is complete ``shift_lag`` edges after its last byte's ``have``.
        done = [Signal(name=f"word_done{k}") for k in range(self.shift_lag)]
        with m.If(~self.run):
            m.d.sync += [pos.eq(2), in_word.eq(0), have.eq(0), pending.eq(0), self.o.valid.eq(0),
                         last_byte.eq(self.wsize == 1), more.eq(self.length > 2)]
            m.d.sync += [d.eq(0) for d in done]
        with m.Else():
            m.d.sync += [have.eq(read), done[0].eq(have & last_byte)]
            m.d.sync += [done[k].eq(done[k - 1]) for k in range(1, self.shift_lag)]
            # Both conditions are recomputed on every edge (the executor may set the length and
            # the word size on the edge that starts the run).
            m.d.sync += [more.eq(Mux(read, pos + 1 < self.length, pos < self.length)),
                         last_byte.eq(in_word == self.wsize - 1)]
            with m.If(read):
                m.d.sync += pos.eq(pos + 1)
            with m.If(have):
                m.d.sync += [in_word.eq(Mux(last_byte, 0, in_word + 1)),
                             last_byte.eq(Mux(last_byte, self.wsize == 1, in_word + 1 == self.wsize - 1))]
                with m.If(last_byte):
                    m.d.sync += pending.eq(1)
            with m.If(done[-1]):
                m.d.sync += self.o.valid.eq(1)
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += [self.o.valid.eq(0), pending.eq(0)]
        return m


class Executor(wiring.Component):
    """Carries out checked requests against the engine and hands the reply to the framer.

    Parameters
    ----------
    engine : :class:`bcq.hw.gemv.GEMV`
        The engine driven (its widths and depths set the word sizes).
    status : bytes
        The STATUS reply payload.
    encoder_lanes : int or None
        With a number, GEMV_BF16 is carried out: an activation encoder
        (:class:`bcq.hw.bcq_encoder.BCQEncoder`, that many BF16 scalars per cycle) feeds the
        engine and an :class:`bcq.hw.output_float.OutputFloat` rounds its rows to BF16. None: no
        encoder (GEMV_BF16 is an unknown command).

    Members
    -------
    req : ``In(stream.Signature(REQUEST))``
        A checked request; taken once its reply has been sent (``done``).
    buf : ``In(memory.ReadPort.Signature(...))``
        Drives the frame buffer's read port (payload bytes).
    cbw, wmem, smem : flipped write-port signatures
        Drive the engine's codebook, weight and scale write ports. A codebook write also goes,
        one edge later, to the encoder's codebooks (one write command fills both).
    x : ``Out(stream.Signature(engine activation layout))``, ``rows`` : ``Out(...)``
        The activation beats and row count of a GEMV: the payload's beats (GEMV) or the
        encoder's (GEMV_BF16).
    res : ``In(stream.Signature(engine result layout))``
        The engine's results, one per row.
    hdr, payload : ``Out(stream.Signature(HEADER))``, ``Out(stream.Signature(8))``
        The reply for the framer; ``done`` (``In(1)``) reports it sent.
    """

    def __init__(self, engine: GEMV, status: bytes, *, encoder_lanes=None):
        self.engine, self.status = engine, status
        e = engine
        cfg = e.layout.config
        self.word_bytes = {P.CMD_WRITE_CODEBOOK: 1, P.CMD_WRITE_WEIGHTS: P.nbytes(e.layout.weight_width),
                           P.CMD_WRITE_SCALES: P.nbytes(e.layout.scale_width),
                           P.CMD_GEMV: P.nbytes(e.x.payload.shape().size)}
        self.result_bytes = P.nbytes(e.acc_bits)
        self.encoder = self.to_bf16 = None
        if encoder_lanes is not None:
            # The encoder's initial codebooks are the engine's (a baked image): both tables agree.
            self.encoder = BCQEncoder(cfg, blocks_per_cycle=e.layout.blocks_per_cycle, lanes=encoder_lanes,
                                      codebooks=e.codebooks)
            if cfg.array_len % encoder_lanes:
                raise ConfigError("encoder_lanes", encoder_lanes, f"a divisor of array_len={cfg.array_len}")
            self.to_bf16 = OutputFloat(e.acc_bits, fmt="bf16")
            self.word_bytes[P.CMD_GEMV_BF16] = P.BF16_BYTES
        sig = e.signature.members
        super().__init__({
            "req": In(stream.Signature(REQUEST)),
            "buf": In(memory.ReadPort.Signature(addr_width=(P.MAX_PAYLOAD - 1).bit_length(), shape=8)),
            "cbw": In(sig["cbw"].signature), "wmem": In(sig["wmem"].signature), "smem": In(sig["smem"].signature),
            "x": Out(stream.Signature(e.x.payload.shape())), "rows": Out(sig["rows"].shape),
            "res": In(stream.Signature(e.o.payload.shape())),
            "hdr": Out(stream.Signature(HEADER)), "payload": Out(stream.Signature(8)), "done": In(1)})

    def _bf16(self, m, word, count, is_last, mode):
        """GEMV_BF16's datapath: the exponents word into registers, the scalars (one per word)
        gathered ``lanes`` at a time into the encoder, its beats to the engine, the engine's rows
        through the BF16 converter. Returns the handshake of the payload words it takes (valid,
        ready) and the serializer of its 2-byte results."""
        enc, conv = self.encoder, self.to_bf16
        m.submodules.encoder, m.submodules.to_bf16 = enc, conv
        m.submodules.bf16_bytes = fb = WordSerializer(P.BF16_BYTES)
        take_valid, take_ready = Signal(), Signal()
        fire = take_valid & take_ready
        # Codebook writes reach the encoder one edge after the engine's port (registered: its
        # codebook registers are spread over the table fill logic).
        en, addr, wdata = registered_write(m, self.cbw, "enc_cbw")
        m.d.comb += [enc.cbw.en.eq(en), enc.cbw.addr.eq(addr), enc.cbw.data.eq(wdata)]
        ts_exp, w_exp, out_exp = Signal(signed(8), name="ts_exp"), Signal(signed(8), name="w_exp"), Signal(signed(10), name="out_exp")
        m.d.comb += [enc.ts_exp.eq(ts_exp), conv.exp.eq(out_exp)]
        lanes = enc.lanes
        # `lanes` scalars per encoder beat, the first in the low bits.
        gathered = Signal(range(max(2, lanes)), name="bf16_gathered")
        held = Signal(16 * max(1, lanes - 1), name="bf16_held")
        m.d.comb += [enc.i.p.data.as_value().eq(Cat(held[:16 * (lanes - 1)], word[:16])), enc.i.p.last.eq(is_last)]
        with m.If(count == 0):       # the exponents word: ts_exp, w_exp (signed bytes)
            m.d.comb += take_ready.eq(1)
            m.d.sync += gathered.eq(0)
            with m.If(take_valid):
                m.d.sync += [ts_exp.eq(word[:8].as_signed()), w_exp.eq(word[8:16].as_signed())]
        with m.Elif((gathered == lanes - 1) if lanes > 1 else True):
            m.d.comb += [enc.i.valid.eq(take_valid), take_ready.eq(enc.i.ready)]
        with m.Else():
            m.d.comb += take_ready.eq(1)
        # The converter's exponent one edge after the exponents word, from its registers (the word's
        # multiplexer and two adders in one cycle were the worst path of a routed 256-MAC build,
        # 13.7 ns); the converter first needs it a whole vector later.
        m.d.sync += out_exp.eq(self.engine.arith.out_exp + ts_exp + w_exp)
        if lanes > 1:
            with m.If(fire & (count != 0)):
                m.d.sync += [held.eq(Cat(held[16:], word[:16])),
                             gathered.eq(Mux(gathered == lanes - 1, 0, gathered + 1))]
        # The encoder's beats and the converter's results flow while the request is GEMV_BF16
        # (`mode`, a register), also after the last word was taken. The beats pass a skid buffer:
        # the encoder's output stage waits on a register, not on the engine's loader (12.7 ns).
        beats = stream.Signature(enc.o.payload.shape()).create()
        skid_buffer(m, enc.o, beats, "enc_beat")
        with m.If(mode):
            m.d.comb += [self.x.payload.eq(beats.payload), self.x.valid.eq(beats.valid), beats.ready.eq(self.x.ready),
                         conv.i.p.value.eq(self.res.payload.value), conv.i.valid.eq(self.res.valid),
                         self.res.ready.eq(conv.i.ready)]
        m.d.comb += [fb.i.payload.eq(conv.o.payload), fb.i.valid.eq(conv.o.valid), conv.o.ready.eq(fb.i.ready)]
        return take_valid, take_ready, fb

    def elaborate(self, platform):
        m = Module()
        r = self.req.payload
        m.submodules.words = words = PayloadWords(self.word_bytes.values())
        m.submodules.status_bytes = sb = WordSerializer(len(self.status))
        m.submodules.result_bytes = rb = WordSerializer(self.result_bytes)
        wiring.connect(m, wiring.flipped(self.buf), words.buf)
        m.d.comb += [words.length.eq(r.length), self.rows.eq(r.start), sb.i.payload.eq(int.from_bytes(self.status, "little")),
                     rb.i.payload.eq(self.res.payload.value)]
        # The request holds still from the edge that takes it on, so what the states below decode
        # from it is decoded on that edge into registers: the command's word size, one flag per
        # command, the last word's index, the reply's source. (Decoded on the spot, the command
        # register's logic ran through the payload words, the word count and the engine's
        # handshakes: 15-21 ns of a 256-MAC ULX3S build.)
        wsize = Signal(8, name="wsize_q")
        is_cmd = {cmd: Signal(name=f"is_cmd_{cmd:02x}") for cmd in (*self.word_bytes, P.CMD_STATUS)}
        last_count = Signal(16, name="last_count")
        m.d.comb += words.wsize.eq(wsize)
        count, word = Signal(16), words.o.payload
        is_last = count == last_count
        bf16 = Signal(name="mode_bf16")     # the request being carried out is GEMV_BF16
        targets = {P.CMD_WRITE_CODEBOOK: self.cbw, P.CMD_WRITE_WEIGHTS: self.wmem, P.CMD_WRITE_SCALES: self.smem}
        # Address and data go to every memory whatever the command (only the enable is decoded):
        # gating the 1.6k-bit weight word by the command put the decode on a reset input of every
        # one of its flip-flops, across the die (the critical path of a 4-row ULX3S build).
        for port in targets.values():
            m.d.comb += [port.addr.eq(r.start + count), port.data.eq(word)]
        with m.If(~bf16):
            m.d.comb += [self.x.payload.as_value().eq(word), self.x.payload.last.eq(is_last),
                         rb.i.valid.eq(self.res.valid), self.res.ready.eq(rb.i.ready)]
        serializers = [sb, rb]
        if self.encoder is not None:
            take_valid, take_ready, fb = self._bf16(m, word, count, is_last, bf16)
            serializers.append(fb)
        # The reply's bytes reach the framer through a skid buffer: the serializers' shift enables
        # wait on a register, not on the framer's and the UART's handshake.
        reply = stream.Signature(8).create()
        skid_buffer(m, reply, self.payload, "reply")
        # The reply's length, registered (the request holds still from IDLE on) and multiplied by
        # shifts: a constant ``*`` became a MULT18X18D in the reply path that the placer put
        # across the die from the framer (a 21 ns path, 47 MHz, in a 256-MAC ULX3S build).
        length = Signal(len(self.hdr.payload.length))

        def times(k):
            return sum(r.start << i for i in range(k.bit_length()) if k >> i & 1)
        m.d.sync += length.eq(Mux(r.status != P.STATUS_OK, 0, Mux(r.cmd == P.CMD_STATUS, len(self.status),
                              Mux(r.cmd == P.CMD_GEMV, times(self.result_bytes),
                                  Mux(r.cmd == P.CMD_GEMV_BF16, times(P.BF16_BYTES), 0)))))
        source = Signal(range(len(serializers)), name="reply_source")
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += [wsize.eq(0), last_count.eq(r.words - 1),
                             source.eq(Mux(r.cmd == P.CMD_STATUS, 0, Mux(r.cmd == P.CMD_GEMV_BF16, 2, 1)))]
                m.d.sync += [flag.eq(r.cmd == cmd) for cmd, flag in is_cmd.items()]
                with m.Switch(r.cmd):
                    for cmd, n in self.word_bytes.items():
                        with m.Case(cmd):
                            m.d.sync += wsize.eq(n)
                with m.If(self.req.valid):
                    m.d.sync += [count.eq(0), bf16.eq((r.cmd == P.CMD_GEMV_BF16) & (r.status == P.STATUS_OK))]
                    with m.If(r.status != P.STATUS_OK):
                        m.next = "HEADER"
                    with m.Elif(r.cmd == P.CMD_STATUS):
                        m.next = "STATUS"
                    with m.Else():
                        m.next = "WORDS"
            with m.State("WORDS"):      # each word to its memory, or to the engine's activation stream
                m.d.comb += words.run.eq(1)
                for cmd, port in targets.items():
                    with m.If(is_cmd[cmd]):
                        m.d.comb += [port.en.eq(words.o.valid), words.o.ready.eq(1)]
                with m.If(is_cmd[P.CMD_GEMV]):
                    m.d.comb += [self.x.valid.eq(words.o.valid), words.o.ready.eq(self.x.ready)]
                if self.encoder is not None:
                    with m.If(is_cmd[P.CMD_GEMV_BF16]):
                        m.d.comb += [take_valid.eq(words.o.valid), words.o.ready.eq(take_ready)]
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
                for k, ser in enumerate(serializers):
                    with m.If(source == k):
                        m.d.comb += [reply.valid.eq(ser.o.valid), reply.payload.eq(ser.o.payload),
                                     ser.o.ready.eq(reply.ready)]
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
    encoder_lanes : int or None
        BF16 scalars per cycle of the activation encoder behind GEMV_BF16 (a width
        :class:`bcq.hw.bcq_encoder.BCQEncoder` takes that divides LA; reported by STATUS). None: no
        encoder and no GEMV_BF16.

    Members
    -------
    i : ``In(stream.Signature(8))``, o : ``Out(stream.Signature(8))``
        Request and reply bytes.
    busy : ``Out(1)``
        High from a request's last byte until its reply has been sent.
    """

    def __init__(self, layout, *, max_rows, max_cols, codebooks=None, image=None, build_id=0,
                 timeout_cycles=1 << 16, multiplier_rows=None, encoder_lanes=None):
        if not isinstance(build_id, int) or not 0 <= build_id < 1 << 32:
            raise ConfigError("build_id", build_id, "a 32-bit unsigned integer")
        self.engine = GEMV(layout, max_rows=max_rows, max_cols=max_cols, codebooks=codebooks, image=image,
                           multiplier_rows=multiplier_rows)
        self.build_id, self.timeout_cycles = build_id, timeout_cycles
        self.encoder_lanes = encoder_lanes
        self.executor = Executor(self.engine, status_payload(self.engine, build_id, encoder_lanes or 0),
                                 encoder_lanes=encoder_lanes)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        eng = self.engine
        m.submodules.engine = eng
        m.submodules.executor = ex = self.executor
        cfg = eng.layout.config
        limits = {P.CMD_WRITE_CODEBOOK: cfg.n_codebooks * cfg.n_entries,
                  P.CMD_WRITE_WEIGHTS: eng.weight_depth, P.CMD_WRITE_SCALES: eng.scale_depth,
                  P.CMD_GEMV: eng.xbuf_depth, P.CMD_GEMV_BF16: 1 + eng.max_cols}
        m.submodules.receiver = rx = FrameReceiver(
            ex.word_bytes, limits, eng.max_rows, timeout_cycles=self.timeout_cycles,
            array_len=cfg.array_len if self.encoder_lanes is not None else None)
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
        # The reply bytes leave through a skid buffer: the framer's CRC update waits on a register,
        # not on the UART's handshake.
        skid_buffer(m, tx.o, self.o, "reply_byte")
        m.d.comb += [eng.rows.eq(ex.rows), ex.done.eq(tx.done), self.busy.eq(rx.req.valid | self.o.valid)]
        return m
