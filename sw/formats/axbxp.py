"""Ax-BxP: approximate blocked computation (Elangovan, Jain, Raghunathan), golden model.

An N-bit operand is cut into K = N/k blocks of k bits; ``x * w = sum_{i,j} x_i w_j << k(i+j)``.
This module is the single definition of the MAC's modes (``BxPConfig``) and of what each mode
computes (``product``, ``dot``); the gateware (``bcq.hw.bxp_mac``) reads the same config.

Sign handling: sign-magnitude. A signed operand is split into its sign and its magnitude
(``|-2**(p-1)| = 2**(p-1)`` still fits p bits), the blocks are blocks of the magnitude, and the
composed magnitude gets the sign ``sign(x) xor sign(w)``. Unsigned operands have no sign.
So an exact mode is exact for both, and an approximate mode is symmetric about zero.

Modes (each names a precision p, a multiple of k, and what is kept of the (p/k)^2 products):
- ``exact``: all block products; with p < N the same block multipliers serve
  (N/p)^2 products per cycle (the throughput scaling of BitFusion).
- ``static`` with L: the L block products of largest weight i + j (ties: larger i first).
- ``dynamic`` with D: per value, D consecutive blocks starting at the operand's leading
  non-zero block (the block index is carried as the shift), i.e. both magnitudes are
  truncated to D blocks from their leading non-zero block: L = D^2 block products.
Products per cycle = K^2 // L, where L is the block products one product needs.
"""

from dataclasses import dataclass, field

import torch

from .errors import BCQError, ConfigError

__all__ = ["Mode", "BxPConfig", "DEFAULT_BXP", "product", "dot", "beat_sums", "matmul", "check_operands",
           "quantize_symmetric"]


@dataclass(frozen=True)
class Mode:
    """One run-time mode of the Ax-BxP MAC.

    Parameters
    ----------
    name : str
        Its name in beats and reports (``exact8``, ``dynamic2``, ...).
    kind : str
        ``exact``, ``static`` or ``dynamic`` (module docstring).
    precision : int
        Operand bits p (a multiple of the block width).
    keep : int
        static: L block products kept; dynamic: D blocks kept per operand; exact: unused.
    """

    name: str
    kind: str          # "exact" | "static" | "dynamic"
    precision: int     # operand bits p
    keep: int = 0      # static: L block products; dynamic: D blocks per operand

    def blocks(self, k):
        return self.precision // k


@dataclass(frozen=True)
class BxPConfig:
    """The MAC's block structure and modes; the golden model and the gateware read the same object.

    Parameters
    ----------
    n_bits : int
        N, operand width (a multiple of ``block_bits``, at most 16).
    block_bits : int
        k, block width; K = N/k blocks per operand, K^2 block multipliers.
    modes : tuple of :class:`Mode`
        The run-time modes (default :func:`default_modes`).
    """

    n_bits: int = 8
    block_bits: int = 2
    modes: tuple = field(default=None)

    def __post_init__(self):
        for name in ("n_bits", "block_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(name, v, "a positive integer")
        if self.n_bits % self.block_bits or self.n_bits > 16:
            raise ConfigError("n_bits", self.n_bits, f"a multiple of block_bits={self.block_bits}, at most 16")
        if self.modes is None:
            object.__setattr__(self, "modes", default_modes(self.n_bits, self.block_bits))
        if not self.modes:
            raise ConfigError("modes", self.modes, "at least one mode")
        names = [m.name for m in self.modes]
        if len(set(names)) != len(names):
            raise ConfigError("modes", names, "distinct mode names")
        for m in self.modes:
            self._check_mode(m)

    def _check_mode(self, m):
        k = self.block_bits
        if m.kind not in ("exact", "static", "dynamic"):
            raise ConfigError(f"modes[{m.name}].kind", m.kind, "exact, static, dynamic")
        if m.precision % k or not 0 < m.precision <= self.n_bits:
            raise ConfigError(f"modes[{m.name}].precision", m.precision, f"a multiple of {k} up to {self.n_bits}")
        kb = m.blocks(k)
        if m.kind == "static" and not 1 <= m.keep <= kb * kb:
            raise ConfigError(f"modes[{m.name}].keep", m.keep, f"1..{kb * kb} block products")
        if m.kind == "dynamic" and not 1 <= m.keep <= kb:
            raise ConfigError(f"modes[{m.name}].keep", m.keep, f"1..{kb} blocks per operand")

    @property
    def n_blocks(self):                 # K
        return self.n_bits // self.block_bits

    @property
    def multipliers(self):              # K^2 block multipliers of k x k bits
        return self.n_blocks ** 2

    def mode_index(self, name):
        for i, m in enumerate(self.modes):
            if m.name == name:
                return i
        raise BCQError(f"unknown mode {name!r}; allowed: {', '.join(m.name for m in self.modes)}")

    def block_products(self, mode: Mode):
        """L: block products one product needs in this mode."""
        kb = mode.blocks(self.block_bits)
        return {"exact": kb * kb, "static": mode.keep, "dynamic": mode.keep ** 2}[mode.kind]

    def products_per_cycle(self, mode: Mode):
        return self.multipliers // self.block_products(mode)

    @property
    def max_lanes(self):
        return max(self.products_per_cycle(m) for m in self.modes)

    def static_positions(self, mode: Mode):
        """Kept (i, j) block pairs of a static mode: largest i + j first, ties larger i first."""
        kb = mode.blocks(self.block_bits)
        pairs = sorted(((i, j) for i in range(kb) for j in range(kb)), key=lambda p: (-(p[0] + p[1]), -p[0]))
        return pairs[:mode.keep]

    def operand_range(self, mode: Mode, signed: bool):
        p = mode.precision
        return (-(1 << (p - 1)), (1 << (p - 1)) - 1) if signed else (0, (1 << p) - 1)

    def max_product(self):
        return ((1 << self.n_bits) - 1) ** 2


def default_modes(n_bits=8, block_bits=2):
    """Exact at N, N/2 and k bits; static and dynamic approximations at N bits."""
    kb = n_bits // block_bits
    modes = [Mode(f"exact{n_bits}", "exact", n_bits)]
    p = n_bits // 2
    while p >= block_bits and p % block_bits == 0:
        modes.append(Mode(f"exact{p}", "exact", p))
        p //= 2
    diag = [sum(min(d, 2 * kb - 2 - d) + 1 for d in range(2 * kb - 2, 2 * kb - 2 - t, -1)) for t in range(1, kb)]
    modes += [Mode(f"static{L}", "static", n_bits, L) for L in reversed(diag)]  # whole diagonals
    modes += [Mode(f"dynamic{D}", "dynamic", n_bits, D) for D in range(kb - 1, 0, -1)]
    return tuple(modes)


DEFAULT_BXP = BxPConfig()


def check_operands(x, cfg: BxPConfig, mode: Mode, signed: bool, what="operand"):
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.dtype == torch.bool:
        raise BCQError(f"{what}: integer tensor needed, got {x.dtype}")
    lo, hi = cfg.operand_range(mode, signed)
    if x.numel() and (x.min() < lo or x.max() > hi):
        raise BCQError(f"{what}: values span [{int(x.min())}, {int(x.max())}]; mode {mode.name} "
                       f"({'signed' if signed else 'unsigned'} {mode.precision}-bit) allows [{lo}, {hi}]")
    return x.to(torch.int64)


def _leading_block(mag, k, kb):
    """Index of the most significant non-zero k-bit block (0 for zero)."""
    lead = torch.zeros_like(mag)
    for b in range(kb):
        lead = torch.where((mag >> (k * b)) != 0, b, lead)
    return lead


def _truncate(mag, k, kb, d):
    """Keep the d blocks starting at the leading non-zero block (lower blocks cleared)."""
    low = torch.clamp(_leading_block(mag, k, kb) - d + 1, min=0)
    return (mag >> (k * low)) << (k * low)


def product(x, w, cfg: BxPConfig = DEFAULT_BXP, mode="exact8", signed=True):
    """Element-wise product of integer tensors as the MAC computes it in ``mode``."""
    mode = cfg.modes[cfg.mode_index(mode)] if isinstance(mode, str) else mode
    x = check_operands(x, cfg, mode, signed, "x")
    w = check_operands(w, cfg, mode, signed, "w")
    k, kb = cfg.block_bits, mode.blocks(cfg.block_bits)
    mx, mw = x.abs(), w.abs()
    if mode.kind == "exact":
        mag = mx * mw
    elif mode.kind == "dynamic":
        mag = _truncate(mx, k, kb, mode.keep) * _truncate(mw, k, kb, mode.keep)
    else:
        mask = (1 << k) - 1
        mag = torch.zeros(torch.broadcast_shapes(mx.shape, mw.shape), dtype=torch.int64)
        for i, j in cfg.static_positions(mode):
            mag = mag + ((((mx >> (k * i)) & mask) * ((mw >> (k * j)) & mask)) << (k * (i + j)))
    neg = (x < 0) ^ (w < 0)
    return torch.where(neg, -mag, mag)


def dot(x, w, cfg: BxPConfig = DEFAULT_BXP, mode="exact8", signed=True):
    """Sum over the last dimension of ``product`` (what one vector of the MAC accumulates)."""
    return product(x, w, cfg, mode, signed).sum(-1)


def _signed_parts(v, cfg, mode):
    """``v`` as a sum of signed terms ``t * 2**shift`` with ``|t|`` what the mode keeps of it:
    [(t, shift)] -- one term (the truncated magnitude) for exact and dynamic modes, one term a
    digit for static modes (keyed by digit index)."""
    k, kb = cfg.block_bits, mode.blocks(cfg.block_bits)
    sgn, mag = torch.sign(v), v.abs()
    if mode.kind == "exact":
        return [(v, 0)]
    if mode.kind == "dynamic":
        return [(sgn * _truncate(mag, k, kb, mode.keep), 0)]
    mask = (1 << k) - 1
    return {i: (sgn * ((mag >> (k * i)) & mask), k * i) for i in range(kb)}


def matmul(x, w, cfg: BxPConfig = DEFAULT_BXP, mode="exact8", signed=True):
    """``dot(x[..., None, :], w)`` for ``x`` of shape (..., n) and ``w`` of shape (m, n), i.e.
    ``x @ w.T`` as the MAC computes it in ``mode``, without the (..., m, n) tensor of products.

    Every mode's product is a sum of products of signed integer terms (sign(x) sign(w) times
    the kept magnitudes: the whole truncated magnitudes for exact and dynamic modes, digit
    pairs (i, j) for static ones), so it is computed as float64 matrix products of those
    terms; each partial sum stays below 2**53 (checked), so the float64 arithmetic is exact."""
    mode = cfg.modes[cfg.mode_index(mode)] if isinstance(mode, str) else mode
    x = check_operands(x, cfg, mode, signed, "x")
    w = check_operands(w, cfg, mode, signed, "w")
    if w.dim() != 2 or x.dim() < 1 or x.shape[-1] != w.shape[1]:
        raise BCQError(f"matmul: x (..., n) and w (m, n) needed, got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[-1] * cfg.max_product() >= 1 << 53:
        raise BCQError(f"matmul: n={x.shape[-1]} too long for exact float64 sums")
    px, pw = _signed_parts(x, cfg, mode), _signed_parts(w, cfg, mode)
    if mode.kind == "static":
        # Kept pairs grouped by the x digit i: one product of digit i of x with the sum of
        # the kept w digits j (each at its own weight 2**(k*j)), fewer matrix products.
        by_i = {}
        for i, j in cfg.static_positions(mode):
            by_i[i] = by_i.get(i, 0) + (pw[j][0] << pw[j][1])
        pairs = [(px[i], (wi, 0)) for i, wi in sorted(by_i.items())]
    else:
        pairs = [(px[0], pw[0])]
    out = torch.zeros(*x.shape[:-1], w.shape[0], dtype=torch.int64)
    for (a, sa), (b, sb) in pairs:
        out += torch.round(a.double() @ b.double().T).to(torch.int64) << (sa + sb)
    return out


def quantize_symmetric(t, bits=8, dim=-1):
    """Symmetric integer quantization with one scale per slice along ``dim`` (per output
    channel for a weight (out, in) with ``dim=-1``; per token for activations):
    ``q = round(t / s)`` clamped to [-(2**(bits-1) - 1), 2**(bits-1) - 1], ``s = max|t| / qmax``
    (an all-zero slice gets s = 1). Returns (q as int64, s as float32 with ``dim`` kept)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ConfigError("bits", bits, "an integer 2..16")
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        raise BCQError(f"quantize_symmetric: floating-point tensor needed, got {t.dtype}")
    if not torch.isfinite(t).all():
        raise BCQError("quantize_symmetric: the tensor holds NaN or infinite values")
    qmax = (1 << (bits - 1)) - 1
    amax = t.float().abs().amax(dim=dim, keepdim=True)
    s = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.round(t.float() / s).clamp(-qmax, qmax).to(torch.int64)
    return q, s


def beat_sums(x, w, modes, signed, cfg: BxPConfig = DEFAULT_BXP):
    """What the MAC adds to its accumulator for each beat, vectorized over beats.

    ``x``, ``w``: integer tensors [beats, max_lanes] (lanes at or past the mode's products per
    cycle are not read); ``modes``: int [beats], indices into ``cfg.modes`` (an index past them
    contributes 0, as the unit's beat contract says); ``signed``: bool [beats]. Each beat's value
    is ``dot`` of its first ``products_per_cycle(mode)`` lanes. Returns int64 [beats].
    """
    x, w = torch.as_tensor(x).to(torch.int64), torch.as_tensor(w).to(torch.int64)
    modes, signed = torch.as_tensor(modes).to(torch.int64), torch.as_tensor(signed).to(torch.bool)
    out = torch.zeros(x.shape[0], dtype=torch.int64)
    for mi, mode in enumerate(cfg.modes):
        ppc = cfg.products_per_cycle(mode)
        for sgn in (False, True):
            sel = (modes == mi) & (signed == sgn)
            if sel.any():
                out[sel] = dot(x[sel, :ppc], w[sel, :ppc], cfg, mode, sgn)
    return out
