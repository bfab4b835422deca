"""Calibration data for the shipped universal codebooks.

The default set (``sw/data/default_codebooks.json``) is calibrated on this fixed, seeded mix of
bell-shaped and heavy-tailed data, the shapes LLM weights and activations take once cut into
scaled block arrays. ``bcq calibrate --synthetic`` rebuilds it bit for bit.
"""

import torch

__all__ = ["synthetic_calibration_data"]


def synthetic_calibration_data(seed=0, rows=4096, cols=256):
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    u = torch.rand(rows // 2, cols, generator=g, dtype=torch.float64) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    # Student-t(3): normal / sqrt(chi2_3 / 3)
    z = torch.randn(rows // 4, cols, generator=g, dtype=torch.float64)
    chi2 = torch.randn(rows // 4, cols, 3, generator=g, dtype=torch.float64).pow(2).sum(-1)
    student = z / torch.sqrt(chi2 / 3)
    return [gauss, laplace, student]
