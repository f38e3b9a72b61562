"""Validation during training: loss and top-1 accuracy on each validation set, without augmentation.

Each process scores its share of the batches; the sums are added over all processes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kws.data import ClipSet
from kws.train import distributed
from kws.train.device import autocast


@torch.no_grad()
def validate(
    model: nn.Module, features: nn.Module, clips: ClipSet, batch_size: int, precision: str
) -> dict[str, float]:
    """`{"loss": mean cross-entropy, "accuracy": top-1, "n": clips}` of `model` on `clips`.

    `model` is the unwrapped module (not DDP): evaluation needs no gradient synchronisation."""
    was_training = model.training, features.training
    model.eval()
    features.eval()
    device = clips.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, clips
    for ids in clips.eval_batches(batch_size, distributed.rank(), distributed.world_size()):
        audio, lengths, labels = clips.batch(ids)
        feats, feat_lengths = features(audio, lengths)
        with autocast(device, precision):
            logits = model(feats, feat_lengths)
        sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        sums[1] += (logits.argmax(-1) == labels).sum()
        sums[2] += len(ids)
    distributed.all_reduce_sum(sums)
    model.train(was_training[0])
    features.train(was_training[1])
    loss, correct, n = sums.tolist()
    return {"loss": loss / max(n, 1), "accuracy": correct / max(n, 1), "n": int(n)}


def set_names(manifests: tuple[str, ...]) -> list[str]:
    """Short names for validation sets: the manifest stems, numbered when two stems are equal."""
    stems = [Path(m).stem for m in manifests]
    return [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]
