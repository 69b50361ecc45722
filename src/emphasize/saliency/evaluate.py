"""Saliency metrics against binary ground truth (fixations, or object masks in the procedural world).

Both follow the MIT/Tuebingen saliency benchmark definitions (Bylinskii et al., "What do different evaluation
metrics tell us about saliency models?", TPAMI 2019) with the ground-truth mask playing the fixation map.
Inputs are one map per image: (H, W), (B, H, W) or (B, 1, H, W); results are () or (B,) float64.
An image whose mask is empty (or, for AUC, covers every pixel) scores NaN.
"""

from __future__ import annotations

import torch


def _flatten_pairs(saliency: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(B, N) float64 maps and (B, N) bool masks, plus whether the input was a single (H, W) map."""
    if saliency.shape != mask.shape:
        raise ValueError(f"saliency {tuple(saliency.shape)} and mask {tuple(mask.shape)} must have the same shape")
    if saliency.ndim == 2:
        return saliency.reshape(1, -1).double(), mask.reshape(1, -1) > 0.5, True
    if saliency.ndim == 3 or (saliency.ndim == 4 and saliency.shape[1] == 1):
        b = saliency.shape[0]
        return saliency.reshape(b, -1).double(), mask.reshape(b, -1) > 0.5, False
    raise ValueError(f"saliency must be (H, W), (B, H, W) or (B, 1, H, W), got {tuple(saliency.shape)}")


def nss(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalized Scanpath Saliency: mean of the standardized map over ground-truth pixels.

    The map is shifted to zero mean and scaled to unit (population) standard deviation over the whole image; NSS
    is its average inside the mask. 0 is chance, higher is better; a constant map scores 0.

    Args:
        saliency: (H, W), (B, H, W) or (B, 1, H, W) saliency values (any scale).
        mask: same shape; ground truth, nonzero (> 0.5) where salient.

    Returns:
        () or (B,) float64.
    """
    sal, gt, single = _flatten_pairs(saliency, mask)
    mean = sal.mean(dim=1, keepdim=True)
    std = sal.std(dim=1, correction=0, keepdim=True)
    z = torch.where(std > 0, (sal - mean) / std.clamp_min(1e-300), torch.zeros_like(sal))  # (B, N)
    count = gt.sum(dim=1)
    out = (z * gt).sum(dim=1) / count.clamp_min(1)
    out = torch.where(count > 0, out, torch.full_like(out, float("nan")))
    return out[0] if single else out


def _auc_judd_one(sal: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """AUC-Judd of one flattened map (N,) against one mask (N,) bool."""
    num_pos = int(gt.sum())
    num_neg = gt.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        return sal.new_tensor(float("nan"))
    order = torch.argsort(sal, descending=True, stable=True)
    values, labels = sal[order], gt[order]
    tp = torch.cumsum(labels, 0)  # (N,) positives with value >= values[i] (within a tie, partial)
    fp = torch.cumsum(~labels, 0)
    _, counts = torch.unique_consecutive(values, return_counts=True)
    ends = torch.cumsum(counts, 0) - 1  # last index of each group of equal values
    tp, fp = tp[ends], fp[ends]  # counts with value >= each distinct value
    # thresholds are the values found at ground-truth pixels (Judd): keep the groups that contain one
    has_pos = torch.diff(tp, prepend=tp.new_zeros(1)) > 0
    tpr = torch.cat([tp.new_zeros(1), tp[has_pos], tp.new_full((1,), num_pos)]).double() / num_pos
    fpr = torch.cat([fp.new_zeros(1), fp[has_pos], fp.new_full((1,), num_neg)]).double() / num_neg
    return torch.trapezoid(tpr, fpr)


def auc_judd(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """AUC-Judd: area under the ROC curve whose thresholds are the map's values at ground-truth pixels.

    At each threshold t the true-positive rate is the share of mask pixels with value >= t and the false-positive
    rate the share of the other pixels with value >= t; (0, 0) and (1, 1) close the curve (trapezoidal area).
    0.5 is chance, 1 is perfect. Judd et al. break ties with random jitter; here equal values are grouped into one
    threshold instead, which is deterministic and identical for tie-free maps (a constant map scores 0.5).

    Args:
        saliency: (H, W), (B, H, W) or (B, 1, H, W) saliency values (any scale; only the order matters).
        mask: same shape; ground truth, nonzero (> 0.5) where salient.

    Returns:
        () or (B,) float64.
    """
    sal, gt, single = _flatten_pairs(saliency, mask)
    out = torch.stack([_auc_judd_one(s, g) for s, g in zip(sal, gt, strict=True)])  # (B,)
    return out[0] if single else out
