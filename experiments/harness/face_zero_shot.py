"""How well the real FER2013 recogniser, unchanged, reads a data set's faces.

The synthetic benchmark draws its faces so that FER2013 can read their
expression; this measures it. ``fer_zero_shot(split)`` runs the pretrained
mini-XCEPTION (``neural.fer_weights.pretrained_face_net``, no fine-tuning) on
every cached face crop of a split that has a recorded per-face emotion and
returns its per-class recall. The harness puts the numbers into a run's report;
``emologic bench faces`` prints them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neural.common import EMOTIONS

#: Crops per forward pass: mini-XCEPTION at 64 px is small, this bounds memory.
_BATCH = 512


@torch.no_grad()
def predict_faces(crops: torch.Tensor, net: torch.nn.Module | None = None) -> torch.Tensor:
    """FER2013's class probabilities of ``crops`` [F, 1, 64, 64] in [-1, 1] -> [F, 7] (EMOTIONS order)."""
    if net is None:
        from neural.fer_weights import pretrained_face_net

        net = pretrained_face_net()
    net.eval()
    if len(crops) == 0:
        return torch.zeros((0, len(EMOTIONS)))
    return torch.cat([net(crops[i:i + _BATCH]) for i in range(0, len(crops), _BATCH)])


def recall_report(probs, labels) -> dict[str, Any]:
    """Per-class recall of argmax predictions ``probs`` [F, 7] against ``labels`` [F] (class indices).

    ``per_class_recall`` maps each emotion to its recall, or None when no face
    has that label; ``macro_recall`` averages the classes that occur.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    pred = np.asarray(probs).reshape(len(labels), len(EMOTIONS)).argmax(axis=1) if len(labels) else labels
    counts = {e: int((labels == k).sum()) for k, e in enumerate(EMOTIONS)}
    recall = {
        e: (float((pred[labels == k] == k).mean()) if counts[e] else None) for k, e in enumerate(EMOTIONS)
    }
    present = [r for r in recall.values() if r is not None]
    return {
        "per_class_recall": recall,
        "macro_recall": float(np.mean(present)) if present else None,
        "accuracy": float((pred == labels).mean()) if len(labels) else None,
        "n_faces": int(len(labels)),
        "counts": counts,
    }


def fer_zero_shot(split, net: torch.nn.Module | None = None) -> dict[str, Any]:
    """FER2013's zero-shot recall on the face crops of ``split`` (a ``cache.loader.CachedSplit``).

    Only faces with a recorded emotion count (the synthetic benchmark records
    one per face); a split without any gives ``n_faces`` 0 and None for every
    recall. ``net`` defaults to the pretrained FER2013 net. Returns::

        {"per_class_recall": {emotion: recall | None}, "macro_recall": float | None,
         "accuracy": float | None, "n_faces": int, "counts": {emotion: int}}
    """
    from experiments.harness.image_stage0 import face_examples

    examples = face_examples(split)
    if examples is None:
        return recall_report(np.zeros((0, len(EMOTIONS))), [])
    crops, labels = examples
    return recall_report(predict_faces(crops, net).numpy(), labels.numpy())


def format_recall(report: dict[str, Any], title: str = "FER2013 zero-shot") -> str:
    """A text table of :func:`recall_report` / :func:`fer_zero_shot` results."""

    def pct(v):
        return "   -" if v is None else f"{v:5.3f}"

    lines = [f"{title}: {report['n_faces']} faces", f"  {'emotion':9} {'faces':>6} {'recall':>6}"]
    for e in EMOTIONS:
        lines.append(f"  {e:9} {report['counts'][e]:6d} {pct(report['per_class_recall'][e]):>6}")
    lines.append(f"  {'macro':9} {'':6} {pct(report['macro_recall']):>6}")
    lines.append(f"  {'accuracy':9} {'':6} {pct(report['accuracy']):>6}")
    return "\n".join(lines)


def face_reading(data, face_net: torch.nn.Module) -> dict[str, Any] | None:
    """How well the face predicate reads a run's labelled faces, for its report:
    FER2013 unchanged (zero-shot) on the pretrain and test splits, and the run's
    stage-0 face net on the test split. None when the data set labels no faces."""
    from experiments.harness.image_stage0 import face_examples
    from neural.fer_weights import pretrained_face_net

    test = face_examples(data.split("test"))  # read once, for both nets
    if test is None:
        return None
    fer = pretrained_face_net()
    zero_shot = {"pretrain": fer_zero_shot(data.split("pretrain"), fer),
                 "test": recall_report(predict_faces(test[0], fer).numpy(), test[1].numpy())}
    stage0 = recall_report(predict_faces(test[0], face_net).numpy(), test[1].numpy())
    return {"FER2013 zero-shot": zero_shot, "stage-0 face net": {"test": stage0}}
