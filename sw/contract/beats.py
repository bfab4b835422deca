"""Beat layouts of every stream the gateware consumes, and the host-side packers that fill them.

Each layout is an ``amaranth.lib.data`` layout: the gateware declares its stream payloads with
it, and the packers below build the same bits from encoded tensors (``bcq.sw.contract.packing``),
so a field's position is defined once. Within a beat, arrays hold element 0 in the low bits;
struct fields follow in the order they are listed (the first field in the low bits).
"""

from amaranth import unsigned
from amaranth.lib import data

from bcq.sw.formats.axbxp import BxPConfig
from bcq.sw.formats.lobcq import BCQTensor
from bcq.sw.formats.mxfp4 import MXTensor

from .geometry import BeatGeometry
from .packing import pack

__all__ = ["operand_fields", "bcq_beat_layout", "bcq_vector_beats", "activation_layout",
           "activation_beats", "mx_beat_layout", "mx_vector_beats", "bxp_beat_layout", "mac_beats",
           "bxp_activation_layout", "bxp_activation_beats"]


# -- LO-BCQ -------------------------------------------------------------------------------------

def operand_fields(geometry: BeatGeometry, prefix=""):
    """The fields of one operand in a beat: ``idx`` (the 4-bit indices of the beat's
    ``scalars_per_beat`` scalars) and ``sel`` (the B blocks' selectors; absent when Nc = 1)."""
    cfg = geometry.config
    fields = {f"{prefix}idx": data.ArrayLayout(unsigned(cfg.index_bits), geometry.scalars_per_beat)}
    if cfg.selector_bits:
        fields[f"{prefix}sel"] = data.ArrayLayout(unsigned(cfg.selector_bits), geometry.blocks_per_cycle)
    return fields


def bcq_beat_layout(geometry: BeatGeometry):
    """One beat of the BCQ dot-product unit: B consecutive blocks of both operands, the scale
    codes of the block array they belong to, and ``last`` (the vector's final beat)."""
    w, x = operand_fields(geometry), operand_fields(geometry)
    fields = {"w_idx": w["idx"], "x_idx": x["idx"]}
    if "sel" in w:
        fields.update(w_sel=w["sel"], x_sel=x["sel"])
    scale = unsigned(geometry.config.scale_bits)
    fields.update(w_scale=scale, x_scale=scale, last=unsigned(1))
    return data.StructLayout(fields)


def _operand_beats(q: BCQTensor, geometry: BeatGeometry):
    """Per beat: (indices, selectors, scale code, last) of a 1-D encoded vector."""
    cfg = geometry.config
    n = q.shape[-1]
    s, b = geometry.scalars_per_beat, geometry.blocks_per_cycle
    idx, sel, sc = q.indices.tolist(), q.selectors.tolist(), q.scales.tolist()
    count = geometry.beats(n)
    return [(idx[k * s:(k + 1) * s], sel[k * b:(k + 1) * b], sc[k * s // cfg.array_len], int(k == count - 1))
            for k in range(count)]


def _check_vector(q, geometry, what):
    if not isinstance(q, BCQTensor) or len(q.shape) != 1:
        raise ValueError(f"{what}: a 1-D BCQTensor is needed")
    if q.config != geometry.config:
        raise ValueError(f"{what} was encoded for {q.config.describe()}, the beats are for "
                         f"{geometry.config.describe()}")


def bcq_vector_beats(w: BCQTensor, x: BCQTensor, geometry: BeatGeometry):
    """Packed beats (ints) presenting the 1-D operands ``w`` and ``x`` to the BCQ unit."""
    _check_vector(w, geometry, "w")
    _check_vector(x, geometry, "x")
    if w.shape != x.shape:
        raise ValueError(f"operands of length {w.shape[0]} and {x.shape[0]}: lengths differ")
    layout = bcq_beat_layout(geometry)
    beats = []
    for (wi, ws, wsc, last), (xi, xs, xsc, _) in zip(_operand_beats(w, geometry), _operand_beats(x, geometry)):
        fields = {"w_idx": wi, "x_idx": xi, "w_scale": wsc, "x_scale": xsc, "last": last}
        if geometry.config.selector_bits:
            fields.update(w_sel=ws, x_sel=xs)
        beats.append(pack(layout, fields))
    return beats


def activation_layout(geometry: BeatGeometry):
    """One activation beat of the matrix-vector engine: one operand's fields, the scale code of
    its block array, and ``last``."""
    return data.StructLayout({**operand_fields(geometry), "scale": unsigned(geometry.config.scale_bits),
                              "last": unsigned(1)})


def activation_beats(x: BCQTensor, geometry: BeatGeometry):
    """Packed activation beats (ints) of a 1-D encoded vector ``x``."""
    _check_vector(x, geometry, "x")
    layout = activation_layout(geometry)
    beats = []
    for idx, sel, scale, last in _operand_beats(x, geometry):
        fields = {"idx": idx, "scale": scale, "last": last}
        if geometry.config.selector_bits:
            fields["sel"] = sel
        beats.append(pack(layout, fields))
    return beats


# -- MXFP4 baseline --------------------------------------------------------------------------------

def mx_beat_layout(lanes):
    """One beat of the MXFP4 unit: ``lanes`` 4-bit element codes of each operand, the E8M0
    scale codes of their block, ``last``."""
    return data.StructLayout({"w": data.ArrayLayout(unsigned(4), lanes), "x": data.ArrayLayout(unsigned(4), lanes),
                              "w_scale": unsigned(8), "x_scale": unsigned(8), "last": unsigned(1)})


def mx_vector_beats(w: MXTensor, x: MXTensor, lanes=8):
    """Packed beats (ints) presenting 1-D MXFP4 operands to the MXFP4 unit."""
    cfg = w.config
    layout = mx_beat_layout(lanes)
    wc, xc, ws, xs = w.codes.tolist(), x.codes.tolist(), w.scales.tolist(), x.scales.tolist()
    n = len(wc) // lanes
    return [pack(layout, {"w": wc[k * lanes:(k + 1) * lanes], "x": xc[k * lanes:(k + 1) * lanes],
                          "w_scale": ws[k * lanes // cfg.block], "x_scale": xs[k * lanes // cfg.block],
                          "last": int(k == n - 1)}) for k in range(n)]


# -- Ax-BxP MAC ------------------------------------------------------------------------------------

def bxp_beat_layout(cfg: BxPConfig):
    """One beat of the Ax-BxP MAC: up to ``max_lanes`` operand pairs (N-bit two's complement or
    unsigned fields; a mode with p < N reads p-bit values sign- or zero-extended to N bits), the
    mode index, the signedness and ``last``. Lanes past the mode's products per cycle are ignored."""
    return data.StructLayout({
        "x": data.ArrayLayout(unsigned(cfg.n_bits), cfg.max_lanes),
        "w": data.ArrayLayout(unsigned(cfg.n_bits), cfg.max_lanes),
        "mode": unsigned(max(1, (len(cfg.modes) - 1).bit_length())),
        "signed": unsigned(1),
        "last": unsigned(1),
    })


def bxp_activation_layout(cfg: BxPConfig):
    """One activation beat of the Ax-BxP engine: the ``x`` lanes of the MAC's beat (P used in a
    mode of P products per cycle, the rest zero: ``bcq.sw.contract.image_layout.BxPLayout``)
    and ``last``."""
    return data.StructLayout({"x": data.ArrayLayout(unsigned(cfg.n_bits), cfg.max_lanes), "last": unsigned(1)})


def bxp_activation_beats(cfg: BxPConfig, x, lanes):
    """Pack one integer activation vector ``x`` (values in the mode's range) into beats of
    ``lanes`` values each (the last beat zero-padded), N-bit two's complement, ``last`` on the
    final beat."""
    layout, mask = bxp_activation_layout(cfg), (1 << cfg.n_bits) - 1
    vals = [int(v) & mask for v in x]
    vals += [0] * (-len(vals) % lanes)
    beats = [vals[i:i + lanes] for i in range(0, len(vals), lanes)]
    return [pack(layout, {"x": b + [0] * (cfg.max_lanes - lanes), "last": int(i == len(beats) - 1)})
            for i, b in enumerate(beats)]


def mac_beats(cfg: BxPConfig, beats):
    """Pack beats given as (x_lanes, w_lanes, mode_name, signed, last) into payload ints.
    Lanes beyond the list are zero; values are written as N-bit two's complement."""
    layout = bxp_beat_layout(cfg)
    mask = (1 << cfg.n_bits) - 1
    out = []
    for xs, ws, mode, sgn, last in beats:
        pad = [0] * (cfg.max_lanes - len(xs))
        out.append(pack(layout, {"x": [v & mask for v in xs] + pad, "w": [v & mask for v in ws] + pad,
                                 "mode": cfg.mode_index(mode), "signed": int(sgn), "last": int(last)}))
    return out
