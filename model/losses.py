"""Training losses for binary masks: BCE + soft Dice, and the per-image Lovasz hinge.

    loss = bce_dice(logits, target)              # the main phase
    loss = bce_lovasz(logits, target)            # the last part of training: optimises IoU directly

Both take logits and {0,1} targets of shape (B, 1, H, W) and average over images,
so a small crack counts as much as a wall-sized joint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per image, smoothed so that an empty target asks for an empty prediction; (B,)."""
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)


def bce_dice(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + dice_weight * soft_dice(logits, target).mean()


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Jaccard loss's Lovasz extension for errors sorted in decreasing order."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Lovasz hinge (Berman et al. 2018), averaged over the batch.

    A convex surrogate of 1 - IoU of the mask `logits > 0`: lowering it raises that
    image's IoU, which is what mIoU averages. An image with an empty target still
    has a gradient, through its most confident false positive.
    """
    losses = []
    for lg, tg in zip(logits.flatten(1), target.flatten(1), strict=True):
        signs = 2 * tg - 1
        errors = 1 - lg * signs
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(F.relu(errors_sorted), lovasz_grad(tg[order])))
    return torch.stack(losses).mean()


def bce_lovasz(logits: torch.Tensor, target: torch.Tensor, lovasz_weight: float = 1.0) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + lovasz_weight * lovasz_hinge(logits, target)
