"""Stimulus for the compiled harness (``bcq.sim.harness``), generated in bulk: one chunk of
vectors at a time, vectorized (numpy/torch, no per-vector Python loop), in a worker process.

Expected results come only from the golden models (``bcq.sw.formats.golden.dot_pairs`` /
``dot_fixed`` for the BCQ unit and engine, ``bcq.sw.formats.axbxp.beat_sums`` for the Ax-BxP
MAC), with every 8-bit scale code decoded as the hardware contract says (``any_code``), so
the edge cases of docs/arithmetic.md section 5 are streamed too: scale codes the encoder never
writes (E4M3 sign bit and 0x7F, E8M0 outside its window), short final block arrays, and scale
fields on the beats the unit does not read. Payloads are packed with the design's own layouts
(``job["layouts"]``, read from its signature) by ``bcq.sw.contract.packing.pack_words``.

A job is a dict: ``kind`` (``bcq``, ``bxp``, ``gemv``), ``params`` (the unit's parameters),
``spec`` (``HarnessSpec.to_json()``), ``layouts``, ``path``, ``vectors``, ``first_vector``,
``seed``, ``stall`` = (in, out) and ``directed`` (the first chunk: directed cases first).
"""

import time

from amaranth.hdl import Shape
import numpy as np
import torch

from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.contract.image_layout import EngineLayout, scale_words, weight_words
from bcq.sw.contract.packing import pack_words
from bcq.sw.contract.tables import pair_table_words
from bcq.sw.formats.axbxp import BxPConfig, beat_sums
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.golden import Arithmetic, dot_fixed, dot_pairs
from bcq.sw.formats.lobcq import BCQTensor

from .harness import Chunk, HarnessSpec, write_chunk
from .vectors import make_cases, random_codebooks, scale_code_range

__all__ = ["generate", "existing", "warm_up", "STALL_PROFILES", "random_operand", "bcq_beats", "bcq_chunk", "bxp_chunk", "bxp_exhaustive_chunk", "gemv_chunk"]

# (stall_in, stall_out) per chunk, cycled: the usual mix, full rate, heavy both ways, and each
# side nearly always stalled (a full pipeline held; a starved one).
STALL_PROFILES = ((0.2, 0.3), (0.0, 0.0), (0.5, 0.5), (0.05, 0.8), (0.6, 0.05))

EDGE_RATE = 0.03     # share of scale codes drawn from all 256 codes (not only the encoder's)
SHORT_RATE = 0.03    # share of vectors whose final block array is short
EXTREME_RATE = 0.01  # share of vectors of extreme codewords (codebook 0 holds entry_min/max)


def warm_up():
    """Run once in each worker before the first job: the imports above are done by then."""
    torch.set_num_threads(1)


def existing(job):
    """A "generator" for a chunk already on disk (``job["path"]``): rerun a kept chunk."""
    return {"path": job["path"], "vectors": 0, "seconds": 0.0, "cpu_seconds": 0.0}


def generate(job):
    """Worker entry point: write the job's chunk file; returns {path, vectors, seconds, cpu_seconds}."""
    torch.set_num_threads(1)   # the simulator has the other core
    t0, c0 = time.perf_counter(), time.process_time()
    spec = HarnessSpec.from_json(job["spec"])
    chunk = {"bcq": bcq_chunk, "bxp": bxp_chunk, "gemv": gemv_chunk}[job["kind"]](job)
    chunk.first_vector, chunk.seed = job["first_vector"], job["seed"]
    chunk.stall_in, chunk.stall_out = job["stall"]
    write_chunk(job["path"], spec, chunk)
    return {"path": job["path"], "vectors": chunk.n_vectors, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def _check_width(layout, width, what):
    if Shape.cast(layout).width != width:
        raise ValueError(f"{what}: the layout is {Shape.cast(layout).width} bits, the design's port {width}")


def _scales(cfg, rng, shape, edge_rate=EDGE_RATE):
    """Scale codes: mostly the encoder's range, its two ends often, any 8-bit code sometimes."""
    lo, hi = scale_code_range(cfg)
    sc = rng.integers(lo, hi + 1, shape)
    r = rng.random(shape)
    sc = np.where(r < 0.02, lo, np.where(r < 0.04, hi, sc))
    return np.where(r >= 1 - edge_rate, rng.integers(0, 256, shape), sc)


def random_operand(cb, rng, count, n, *, edge_rate=EDGE_RATE, extreme=None):
    """Random encoded rows [count, n] (a short final array when n is not a multiple of LA);
    rows flagged in ``extreme`` use only codebook 0's entry_min/entry_max and the top scale."""
    cfg = cb.config
    idx = rng.integers(0, 16, (count, n), dtype=np.uint8)
    sel = rng.integers(0, cfg.n_codebooks, (count, n // cfg.block_len), dtype=np.uint8)
    sc = _scales(cfg, rng, (count, -(-n // cfg.array_len)), edge_rate)
    if extreme is not None and extreme.any():
        idx[extreme] = rng.integers(0, 2, (int(extreme.sum()), n))   # random_codebooks: [0]=min, [1]=max
        sel[extreme] = 0
        sc[extreme] = scale_code_range(cfg)[1]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))  # noqa: E731
    return BCQTensor(cb, t(idx), t(sel), t(sc))


def _gather_vectors(words, lens, order):
    """Rows of ``words`` (vectors of ``lens`` consecutive beats) with the vectors put in ``order``."""
    starts = np.cumsum(lens) - lens
    lp, sp = lens[order], starts[order]
    return words[np.repeat(sp - (np.cumsum(lp) - lp), lp) + np.arange(lp.sum())]


# -- BCQ dot-product unit ---------------------------------------------------------------------------

def _edge_pairs(cb, geo, max_len, rng):
    """Directed cases of the edge contract (docs/arithmetic.md section 5) as (w, x) 1-D pairs."""
    cfg = cb.config
    la, S, bpa = cfg.array_len, geo.scalars_per_beat, geo.beats_per_array
    lo, hi = scale_code_range(cfg)

    def pair(n, w_scale=None, x_scale=None, idx=None):
        w, x = random_operand(cb, rng, 1, n), random_operand(cb, rng, 1, n)
        for q, code in ((w, w_scale), (x, x_scale)):
            if code is not None:
                q.scales[:] = code
            if idx is not None:
                q.indices[:], q.selectors[:] = idx, 0
        return w[0], x[0]

    if cfg.scale_format == "e4m3":
        codes = [(0x7F, 0x7F), (0x7F, hi), (0xFF, 0x7F), (0x80, 0x80 | hi), (0x80 | 0x38, 0x38), (0xFE, lo)]
    else:
        codes = [(0, 0), (255, 255), (lo - 1, hi + 1), (0, 255), (lo - 1, lo), (hi + 1, hi)]
    pairs = [pair(2 * la, a, b) for a, b in codes if 0 <= a < 256 and 0 <= b < 256]
    # Largest magnitudes the edge decode allows, at the longest vector (the widths must hold them).
    top = 0x7F if cfg.scale_format == "e4m3" else 255
    pairs += [pair(max_len, top, top, idx=0), pair(max_len, top, top, idx=1)]
    if bpa > 1:   # short final arrays: one beat, one beat short of an array, and past a whole one
        pairs += [pair(S), pair(la - S), pair(la + S), pair(max_len - S, top, top, idx=0)]
    return pairs


def bcq_beats(w, x, layout, geo: BeatGeometry, rng=None):
    """Packed beats (uint32 words, :func:`pack_words`) of N operand pairs ``w``, ``x`` [N, n]
    of equal length (a whole number of beats; the final array may be short), vector after
    vector. With ``rng``, the scale fields of the beats the unit does not read (all but an
    array's last beat, docs/arithmetic.md section 3) carry random codes; without, every beat
    carries its array's codes (as ``bcq.sw.contract.beats.bcq_vector_beats`` packs them)."""
    cfg = geo.config
    S, B, bpa = geo.scalars_per_beat, geo.blocks_per_cycle, geo.beats_per_array
    count, n = w.shape
    L = n // S
    k = np.arange(L)
    read = ((k + 1) % bpa == 0) | (k == L - 1)
    fields = {"w_idx": w.indices.numpy().reshape(count * L, S), "x_idx": x.indices.numpy().reshape(count * L, S),
              "last": np.tile(k == L - 1, count)}
    for name, q in (("w", w), ("x", x)):
        sc = q.scales.numpy()[:, k * S // cfg.array_len]
        if rng is not None:
            sc = np.where(read[None, :], sc, rng.integers(0, 256, sc.shape))
        fields[f"{name}_scale"] = sc.reshape(-1)
        if cfg.selector_bits:
            fields[f"{name}_sel"] = q.selectors.numpy().reshape(count * L, B)
    return pack_words(layout, fields, count * L)


def bcq_chunk(job):
    """Random vectors of mixed lengths for the BCQ unit; codebooks written in the setup phase."""
    p = job["params"]
    cfg = BCQConfig.from_dict(p["config"])
    geo = BeatGeometry(cfg, p["blocks_per_cycle"])
    layout, out_layout = job["layouts"]["inp"], job["layouts"]["out"]
    spec = HarnessSpec.from_json(job["spec"])
    _check_width(layout, spec.inp[1], "beat")
    max_len = p["max_len"]
    arith = Arithmetic(cfg, max_len)
    rng = np.random.default_rng(job["seed"])
    cb = random_codebooks(cfg, torch.Generator().manual_seed(job["seed"]))
    S, bpa, la = geo.scalars_per_beat, geo.beats_per_array, cfg.array_len
    n = job["vectors"]

    fixed = []   # directed (w, x) pairs, first in the chunk
    if job.get("directed"):
        fixed = [(c.w, c.x) for c in make_cases(cfg, cb, seed=job["seed"], count=0, max_len=max_len)]
        fixed = (fixed + _edge_pairs(cb, geo, max_len, rng))[:n]
    n_random = n - len(fixed)
    max_arrays = max_len // la
    arrays = np.minimum(rng.choice([1, 1, 2, 3, 4, 5, 8], n_random), max_arrays)
    wide = rng.random(n_random) < 0.02
    arrays[wide] = rng.integers(1, max_arrays + 1, int(wide.sum()))
    lens = arrays * bpa
    if bpa > 1:
        short = rng.random(n_random) < SHORT_RATE
        lens[short] -= rng.integers(1, bpa, int(short.sum()))
    extreme = rng.random(n_random) < EXTREME_RATE

    groups = [(np.array([k]), w[None], x[None]) for k, (w, x) in enumerate(fixed)]
    for length in np.unique(lens):
        members = np.nonzero(lens == length)[0]
        ext = extreme[members]
        w = random_operand(cb, rng, len(members), int(length) * S, extreme=ext)
        x = random_operand(cb, rng, len(members), int(length) * S, extreme=ext)
        groups.append((len(fixed) + members, w, x))

    words, expected, vec_lens, vec_ids = [], [], [], []
    for members, w, x in groups:
        expected.append(dot_pairs(w, x, arith, any_code=True).numpy())
        words.append(bcq_beats(w, x, layout, geo, rng))
        vec_lens.append(np.full(w.shape[0], w.shape[1] // S))
        vec_ids.append(members)
    words, expected = np.concatenate(words), np.concatenate(expected)
    vec_lens, vec_ids = np.concatenate(vec_lens), np.concatenate(vec_ids)
    # Groups are by length; the chunk's order is vec_ids (directed first, then random lengths).
    order = np.argsort(vec_ids, kind="stable")
    beats = _gather_vectors(words, vec_lens, order)
    expected = expected[order]
    setup = [("cbw", a, v) for a, v in enumerate(pair_table_words(cb))] if "cbw" in [
        w_[0] for w_ in spec.writes] else []
    return Chunk(setup, beats, np.arange(len(expected)), pack_words(out_layout, expected, len(expected)),
                 len(expected))


# -- Ax-BxP MAC -----------------------------------------------------------------------------------

def bxp_exhaustive_chunk(cfg: BxPConfig, spec: HarnessSpec, *, stall=(0.0, 0.0), seed=1):
    """Every operand pair of every 8-bit mode (as many bits as the operands), one beat per
    vector so that every beat's sum is checked: signed and unsigned in the exact modes, signed in
    the approximate ones. A beat carries ``products_per_cycle(mode)`` consecutive pairs (one in
    exact8 and dynamic3); a mode's last beat is padded with zero pairs, the lanes past the mode's
    products hold zeros. Returns the :class:`Chunk` and ``[(label, pairs)]``."""
    inp, out = spec.layouts["inp"], spec.layouts["out"]
    _check_width(inp, spec.inp[1], "beat")
    xs, ws, modes, sgns, covered = [], [], [], [], []
    for mi, mode in enumerate(cfg.modes):
        if mode.precision != cfg.n_bits:
            continue
        for sgn in ((True, False) if mode.kind == "exact" else (True,)):
            lo, hi = cfg.operand_range(mode, sgn)
            vals = np.arange(lo, hi + 1, dtype=np.int64)
            X, W = (a.ravel() for a in np.meshgrid(vals, vals, indexing="ij"))
            ppc = cfg.products_per_cycle(mode)
            beats = -(-X.size // ppc)
            for a, dst in ((X, xs), (W, ws)):
                lanes = np.zeros((beats, cfg.max_lanes), dtype=np.int64)
                lanes[:, :ppc] = np.concatenate([a, np.zeros(beats * ppc - a.size, dtype=np.int64)]).reshape(beats, ppc)
                dst.append(lanes)
            modes.append(np.full(beats, mi))
            sgns.append(np.full(beats, sgn))
            covered.append((f"{mode.name} {'signed' if sgn else 'unsigned'}", X.size))
    x, w, mode, sgn = (np.concatenate(v) for v in (xs, ws, modes, sgns))
    T = len(x)
    sums = beat_sums(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(mode), torch.from_numpy(sgn), cfg)
    beats = pack_words(inp, {"x": x, "w": w, "mode": mode, "signed": sgn, "last": np.ones(T, dtype=bool)}, T)
    chunk = Chunk([], beats, np.arange(T), pack_words(out, sums.numpy(), T), T, stall_in=stall[0], stall_out=stall[1],
                  seed=seed)
    return chunk, covered


def bxp_chunk(job):
    """Vectors of 1..8 beats with a random mode and signedness per beat (now and then a mode
    index past the configured modes, which contributes 0); operands favour the extremes; lanes
    past the mode's products per cycle carry noise."""
    p = job["params"]
    cfg = BxPConfig(**p["config"])
    layout, out_layout = job["layouts"]["inp"], job["layouts"]["out"]
    spec = HarnessSpec.from_json(job["spec"])
    _check_width(layout, spec.inp[1], "beat")
    rng = np.random.default_rng(job["seed"])
    n = job["vectors"]
    lens = rng.integers(1, 9, n)
    T = int(lens.sum())
    n_modes = len(cfg.modes)
    mode_field = 1 << Shape.cast(layout["mode"].shape).width
    modes = rng.integers(0, n_modes, T)
    if mode_field > n_modes:
        bad = rng.random(T) < 0.01
        modes[bad] = rng.integers(n_modes, mode_field, int(bad.sum()))
    sgn = rng.integers(0, 2, T).astype(bool)
    lanes, N = cfg.max_lanes, cfg.n_bits
    lo_t = np.zeros((mode_field, 2), dtype=np.int64)
    hi_t = np.full((mode_field, 2), (1 << N) - 1, dtype=np.int64)
    ppc_t = np.full(mode_field, 0, dtype=np.int64)
    for mi, mode in enumerate(cfg.modes):
        ppc_t[mi] = cfg.products_per_cycle(mode)
        for s in (0, 1):
            lo_t[mi, s], hi_t[mi, s] = cfg.operand_range(mode, bool(s))

    def operands():
        lo, hi = lo_t[modes, sgn.astype(int)][:, None], hi_t[modes, sgn.astype(int)][:, None]
        uniform = lo + (rng.random((T, lanes)) * (hi - lo + 1)).astype(np.int64)
        pick = rng.integers(0, 4, (T, lanes))
        v = np.select([pick == 0, pick == 1, pick == 2], [lo, hi, np.zeros_like(uniform)], uniform)
        unused = np.arange(lanes)[None, :] >= ppc_t[modes][:, None]
        return np.where(unused, rng.integers(0, 1 << N, (T, lanes)), v)

    x, w = operands(), operands()
    sums = beat_sums(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(modes), torch.from_numpy(sgn), cfg)
    starts = np.cumsum(lens) - lens
    expected = np.add.reduceat(sums.numpy(), starts)
    last = np.zeros(T, dtype=bool)
    last[np.cumsum(lens) - 1] = True
    beats = pack_words(layout, {"x": x, "w": w, "mode": modes, "signed": sgn, "last": last}, T)
    return Chunk([], beats, np.arange(n), pack_words(out_layout, expected, n), n)


# -- matrix-vector engine ---------------------------------------------------------------------------

def gemv_chunk(job):
    """A random matrix (shape, codebooks, weights and scales written in the setup phase, ``rows``
    set), then activation vectors; every row of every vector checked as {value, row}."""
    p = job["params"]
    cfg = BCQConfig.from_dict(p["config"])
    lay = EngineLayout(cfg, p["lanes"], p["blocks_per_cycle"])
    geo = lay.geometry
    layout, out_layout = job["layouts"]["inp"], job["layouts"]["out"]
    spec = HarnessSpec.from_json(job["spec"])
    _check_width(layout, spec.inp[1], "activation beat")
    rng = np.random.default_rng(job["seed"])
    cb = random_codebooks(cfg, torch.Generator().manual_seed(job["seed"]))
    la = cfg.array_len
    max_rows, max_cols = p["max_rows"], p["max_cols"]
    rows = int(rng.choice([1, max_rows, rng.integers(1, max_rows + 1)]))
    cols = la * int(rng.choice([1, max_cols // la, rng.integers(1, max_cols // la + 1)]))
    W = random_operand(cb, rng, rows, cols, edge_rate=0.05)
    n = job["vectors"]
    X = random_operand(cb, rng, n, cols, edge_rate=EDGE_RATE, extreme=rng.random(n) < EXTREME_RATE)
    values = dot_fixed(W, X, Arithmetic(cfg, max_cols), any_code=True).reshape(n, rows).numpy()
    mask = (1 << cfg.entry_bits) - 1
    setup = [("cbw", a, v & mask) for a, v in enumerate(cb.entries.flatten().tolist())]
    setup += [("wmem", a, v) for a, v in enumerate(weight_words(W, lay))]
    setup += [("smem", a, v) for a, v in enumerate(scale_words(W, lay))]
    setup += [("rows", 0, rows)]
    S, B = geo.scalars_per_beat, geo.blocks_per_cycle
    L = cols // S
    k = np.arange(L)
    fields = {"idx": X.indices.numpy().reshape(n * L, S), "scale": X.scales.numpy()[:, k * S // la].reshape(-1),
              "last": np.tile(k == L - 1, n)}
    if cfg.selector_bits:
        fields["sel"] = X.selectors.numpy().reshape(n * L, B)
    beats = pack_words(layout, fields, n * L)
    expected = pack_words(out_layout, {"value": values.reshape(-1), "row": np.tile(np.arange(rows), n)}, n * rows)
    return Chunk(setup, beats, np.repeat(np.arange(n), rows), expected, n)
