"""A slow, independent LO-BCQ encoder in plain Python floats (IEEE float64, as torch's), written
from the definition in docs/arithmetic.md section 1. The fast encoder (bcq.sw.formats.lobcq) must
match it bit for bit; nothing here calls the library's encoding code."""

import struct


def scale_table(cfg):
    """Every code the encoder may choose and its value, in increasing value order, built here
    from the formats' definitions."""
    fmt = cfg.scale
    if fmt.name == "e4m3":
        out = []
        for code in range(0x7F):            # 0x7F is NaN, sign bit 0
            e, m = code >> 3, code & 7
            out.append((code, m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)))
        return out
    return [(127 + e, 2.0 ** e) for e in range(fmt.exp_min, fmt.exp_max + 1)]


def choose_scale(need, cfg):
    table = scale_table(cfg)
    if cfg.scale_rule == "ceil":
        for code, v in table:
            if v >= need:
                return code, v
        return table[-1]
    best = table[0]
    for code, v in table[1:]:
        # Strictly nearer, or as near and larger (ties to the larger value).
        if abs(v - need) <= abs(best[1] - need):
            best = (code, v)
    return best


def tensor_scale(values, cfg):
    if not cfg.tensor_scale:
        return 1.0
    amax = max(abs(v) for v in values)
    ts = amax / (cfg.entry_max * cfg.scale.max_value)
    ts = struct.unpack("f", struct.pack("f", ts))[0]      # round to FP32
    return ts if ts > 0 else 1.0


def _nearer(y, a, b):
    """-1 if integer ``a`` is strictly nearer to ``y`` than ``b``, 1 if farther, 0 if as near.
    Exact: |y - a| < |y - b| iff y is on a's side of the midpoint (a + b) / 2, a float exactly."""
    if a == b or y == (a + b) / 2:
        return 0
    return -1 if (y < (a + b) / 2) == (a < b) else 1


def nearest_entry(y, book):
    """Index of the nearest entry; ties: the smaller value, then the lower index."""
    best = 0
    for i in range(1, len(book)):
        c = _nearer(y, book[i], book[best])
        if c < 0 or (c == 0 and book[i] < book[best]):
            best = i
    return best


def encode_block(ys, books):
    """(selector, indices): least squared error summed in scalar order; ties: lower codebook."""
    best = None
    for c, book in enumerate(books):
        idx = [nearest_entry(y, book) for y in ys]
        err = 0.0
        for y, i in zip(ys, idx):
            err += (y - book[i]) ** 2
        if best is None or err < best[0]:
            best = (err, c, idx)
    return best[1], best[2]


def encode(rows, codebooks):
    """rows: list of lists of floats (each a multiple of LA). Returns (ts, scales, selectors,
    indices, decoded) as nested lists."""
    cfg = codebooks.config
    books = codebooks.entries.tolist()
    ts = tensor_scale([v for r in rows for v in r], cfg)
    out = ([], [], [], [])
    for r in rows:
        sc, sl, ix, dq = [], [], [], []
        for a in range(0, len(r), cfg.array_len):
            arr = r[a:a + cfg.array_len]
            need = max(abs(v) for v in arr) / ts / cfg.entry_max
            code, s = choose_scale(need, cfg)
            sc.append(code)
            ys = [v / ts / s if s > 0 else 0.0 for v in arr]
            for b in range(0, cfg.array_len, cfg.block_len):
                sel, idx = encode_block(ys[b:b + cfg.block_len], books)
                sl.append(sel)
                ix += idx
                dq += [books[sel][i] * s * ts for i in idx]
        for lst, v in zip(out, (sc, sl, ix, dq)):
            lst.append(v)
    return (ts, *out)
