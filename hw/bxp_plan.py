"""Elaboration-time plan of the Ax-BxP MAC: how every mode of a ``BxPConfig`` maps onto one
fixed array of K^2 block multipliers ("bricks"). Pure Python, no gateware; the gateware
(``bxp_mac``) and the tests read the same plan.

Every mode is written in one form. Per lane and operand, a *top digit index* H is chosen:

- ``("const", c)``: H = c (exact p: c = p/k - 1; static: c = p/k - 1; a dynamic mode that
  gets the whole array for its one product, "truncation form": c = p/k - 1),
- ``("lead", c)``: H = max(L, c), L the index of the leading non-zero digit of the magnitude
  (dynamic D with more than one product per cycle: c = D - 1, so digits H, H-1, .., H-D+1 are
  exactly the D digits that ``sw.axbxp._truncate`` keeps).

The operand then offers *window digits* W_u = digit (H - u) of its magnitude with exponent
e_u = H - u (u = 0, 1, ..). A product is a list of (u, v) window pairs; brick (u, v) computes
W_u(x) * W_v(w) << k * (e_u(x) + e_v(w)). Truncation-form dynamic modes additionally clear
digits below the kept window (``mask_d``), so they reuse the exact wiring unchanged.

``assign`` places every (lane, u, v) of every mode on a brick so that bricks see as few
distinct (lane, u) sources as possible (each extra source is a mux input in gateware).
"""

import functools
import random
from dataclasses import dataclass

__all__ = ["ModePlan", "BrickPlan", "plan"]


@dataclass(frozen=True)
class ModePlan:
    """One mode as the brick array computes it.

    Members
    -------
    name : str
        The mode's name.
    lanes : int
        Products per cycle.
    top : tuple
        ("const", c) or ("lead", c): the rule for the top window digit H.
    pairs : tuple
        (u, v) window-digit pairs of one product.
    mask_d : int
        Truncation form: keep digits i with no non-zero digit above i + mask_d - 1 (0: none).
    """

    name: str
    lanes: int          # products per cycle
    top: tuple          # ("const", c) or ("lead", c): the rule for H
    pairs: tuple        # (u, v) window pairs of one product
    mask_d: int = 0     # truncation form: keep digits i with no non-zero digit above i + mask_d - 1


@dataclass(frozen=True)
class BrickPlan:
    """Placement of every block product of every mode on a brick.

    Members
    -------
    modes : tuple of :class:`ModePlan`
        Per configured mode.
    table : tuple
        Per mode: per brick, None or (lane, u, v).
    windows : tuple
        Per lane: the number of window digits it must offer (max u + 1).
    cost : int
        Total distinct sources over bricks (x, w, sign): what :func:`plan` minimizes.
    """

    modes: tuple        # ModePlan per configured mode
    table: tuple        # per mode: per brick, None or (lane, u, v)
    windows: tuple      # per lane: number of window digits it must offer (max u + 1)
    cost: int           # total distinct sources over bricks (x, w, sign)

    def sources(self, brick, side):
        """{(lane, u): [mode indices]} feeding one side (0: x, 1: w) of one brick."""
        out = {}
        for mi, tab in enumerate(self.table):
            e = tab[brick]
            if e is not None:
                out.setdefault((e[0], e[1 + side]), []).append(mi)
        return out

    def sign_sources(self, brick):
        out = {}
        for mi, tab in enumerate(self.table):
            e = tab[brick]
            if e is not None:
                out.setdefault(e[0], []).append(mi)
        return out


def mode_plan(cfg, mode):
    k, K = cfg.block_bits, cfg.n_blocks
    kb = mode.blocks(k)
    lanes = cfg.products_per_cycle(mode)
    if mode.kind == "exact":
        return ModePlan(mode.name, lanes, ("const", kb - 1), tuple((u, v) for u in range(kb) for v in range(kb)))
    if mode.kind == "static":
        pairs = tuple((kb - 1 - i, kb - 1 - j) for i, j in cfg.static_positions(mode))
        return ModePlan(mode.name, lanes, ("const", kb - 1), pairs)
    d = mode.keep
    if lanes == 1:  # the whole array serves one product: exact wiring on truncated magnitudes
        return ModePlan(mode.name, 1, ("const", kb - 1), tuple((u, v) for u in range(kb) for v in range(kb)), d)
    return ModePlan(mode.name, lanes, ("lead", d - 1), tuple((u, v) for u in range(d) for v in range(d)))


def _cost(table, bricks):
    total = 0
    for b in range(bricks):
        sx, sw, sn = set(), set(), set()
        for tab in table:
            e = tab[b]
            if e is not None:
                sx.add((e[0], e[1]))
                sw.add((e[0], e[2]))
                sn.add(e[0])
        total += 2 * len(sx) + 2 * len(sw) + len(sn)
    return total


def _greedy(products, bricks, rng):
    sx = [set() for _ in range(bricks)]
    sw = [set() for _ in range(bricks)]
    sn = [set() for _ in range(bricks)]
    table = [None] * len(products)
    order = sorted(range(len(products)), key=lambda i: (-len(products[i]), rng.random()))
    for mi in order:
        tab = [None] * bricks
        free = list(range(bricks))
        prods = list(products[mi])
        rng.shuffle(prods)
        for l, u, v in prods:
            def added(b):
                return 2 * ((l, u) not in sx[b]) + 2 * ((l, v) not in sw[b]) + (l not in sn[b])
            best = min(added(b) for b in free)
            b = rng.choice([b for b in free if added(b) == best])
            free.remove(b)
            tab[b] = (l, u, v)
            sx[b].add((l, u))
            sw[b].add((l, v))
            sn[b].add(l)
        table[mi] = tab
    return table


def _improve(table, bricks):
    """Hill-climb: swap the contents of two bricks within one mode while the cost drops."""
    cost = _cost(table, bricks)
    improved = True
    while improved:
        improved = False
        for tab in table:
            for a in range(bricks):
                for b in range(a + 1, bricks):
                    if tab[a] is None and tab[b] is None:
                        continue
                    tab[a], tab[b] = tab[b], tab[a]
                    c = _cost(table, bricks)
                    if c < cost:
                        cost, improved = c, True
                    else:
                        tab[a], tab[b] = tab[b], tab[a]
    return cost


@functools.lru_cache(maxsize=None)
def plan(cfg, tries=12, seed=1):
    """The ``BrickPlan`` of a config (deterministic: fixed seed; cached per config)."""
    modes = tuple(mode_plan(cfg, m) for m in cfg.modes)
    bricks = cfg.multipliers
    products = [[(l, u, v) for l in range(mp.lanes) for u, v in mp.pairs] for mp in modes]
    for mp, prods in zip(modes, products):
        assert len(prods) <= bricks, f"mode {mp.name} needs {len(prods)} block products, {bricks} bricks"
    rng = random.Random(seed)
    best = None
    for _ in range(tries):
        table = _greedy(products, bricks, rng)
        cost = _improve(table, bricks)
        if best is None or cost < best[0]:
            best = (cost, [list(t) for t in table])
    cost, table = best
    lanes = max(mp.lanes for mp in modes)
    windows = [0] * lanes
    for mp in modes:
        for l in range(mp.lanes):
            windows[l] = max(windows[l], 1 + max(max(u, v) for u, v in mp.pairs))
    return BrickPlan(modes, tuple(tuple(t) for t in table), tuple(windows), cost)
