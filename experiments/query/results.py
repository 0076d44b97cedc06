"""What ``emologic query`` returns per input: a :class:`QueryResult` or a
:class:`QueryError` (one line), and how inputs (files, directories) are expanded."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

#: File name endings ``emologic query DIR`` treats as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Probabilities closer than this are equal: a distribution within it prefers no emotion.
UNIFORM_TOLERANCE = 1e-6


def is_uniform(dist: dict[str, float]) -> bool:
    """Whether ``dist`` prefers no value (e.g. the untrained scene head's output)."""
    values = list(dist.values())
    return max(values) - min(values) <= UNIFORM_TOLERANCE


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #
@dataclass
class Face:
    slot: str  # face1 (largest) .. face3
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) pixels of the image as displayed
    prob: float  # detection probability (1.0 for boxes from annotations)
    size: float  # sqrt(box area / image area), what the context's size bucket reads


@dataclass
class QueryResult:
    input: str  # the path as given (or as found in a given directory)
    image_size: tuple[int, int]  # (width, height)
    faces: list[Face]
    context: str  # the program's context key, e.g. n1_large
    probs: dict[str, float]  # P(emotion | image), every emotion in EMOTIONS order
    top: list[tuple[str, float]]  # the top-K emotions, most probable first
    source_probs: dict[str, dict[str, float]]  # existing source -> its own emotion distribution
    trust: dict[str, float]  # P(source selected | context): learned, or the program's prior
    posterior: dict[str, float]  # P(source | image, prediction) over the existing sources, largest first
    annotated: str | None = None  # path of the annotated PNG (``annotate=``)
    faces_found: int | None = None  # faces the detector found; the (up to three) largest are ``faces``
    #: existing source -> where its networks' knowledge came from (neural.provenance.source_provenance record)
    provenance: dict[str, dict] = field(default_factory=dict)
    #: programs with a V/A source: per dimension the MC-dropout estimate ``mean``, its ``std``
    #: and the Gaussian mass per bin the logic reads, ``{"valence": {"mean", "std", "bins"}, "arousal": ...}``
    va: dict | None = None

    @property
    def prediction(self) -> str:
        return self.top[0][0]

    @property
    def decided(self) -> bool:
        """Whether some emotion is more probable than another. Not so when every
        source that answers knows nothing (the untrained program on a photo
        without faces): then ``prediction`` is only the first of equals."""
        return not is_uniform(self.probs)

    def knows(self, source: str) -> bool:
        """Whether any network behind ``source`` started from weights learned on real data."""
        record = self.provenance.get(source)
        return record is None or record["pretrained"]

    def says(self, source: str) -> str:
        """A source's own answer in words: ``happy (1.00)``, ``nothing (uniform)``, flagged
        ``[no pretrained knowledge]`` when none of its networks started from real-data weights."""
        flag = "" if self.knows(source) else " [no pretrained knowledge]"
        if is_uniform(self.source_probs[source]):
            return "nothing (uniform)" + flag
        emotion, p = self.sources[source]
        return f"{emotion} ({p:.2f}){flag}"

    @property
    def sources(self) -> dict[str, tuple[str, float]]:
        """Each existing source's own top emotion and its probability."""
        return {s: max(d.items(), key=lambda kv: kv[1]) for s, d in self.source_probs.items()}

    @property
    def trusted(self) -> str:
        """The source most probably behind the prediction."""
        return next(iter(self.posterior))

    def explanation(self) -> str:
        """The posterior in words, e.g. ``trusted face1 (81%), scene (19%)``."""
        return "trusted " + ", ".join(f"{s} ({p:.0%})" for s, p in self.posterior.items())

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "image_size": list(self.image_size),
            "faces": [dataclasses.asdict(f) | {"box": list(f.box)} for f in self.faces],
            "faces_found": len(self.faces) if self.faces_found is None else self.faces_found,
            "context": self.context,
            "prediction": self.prediction if self.decided else None,
            "decided": self.decided,
            "top": [{"emotion": e, "p": p} for e, p in self.top],
            "probs": self.probs,
            # a source that prefers no emotion (uniform) names none
            "sources": {s: {"emotion": None if is_uniform(self.source_probs[s]) else e, "p": p}
                        for s, (e, p) in self.sources.items()},
            "source_probs": self.source_probs,
            # whether each source's networks started from weights learned on real data (details: "model")
            "pretrained_knowledge": {s: self.knows(s) for s in self.source_probs},
            "trust": self.trust,
            "posterior": self.posterior,
            "trusted": self.trusted,
            "annotated": self.annotated,
            **({"va": self.va} if self.va is not None else {}),
        }


@dataclass
class QueryError:
    input: str
    error: str  # one line, without the input

    def to_dict(self) -> dict:
        return {"input": self.input, "error": self.error}

    def __str__(self) -> str:
        return f"{self.input}: {self.error}"


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[str | QueryError]:
    """Files as given, directories replaced by their image files (sorted, not
    recursive); a missing path or a directory without images becomes a
    :class:`QueryError`. Whether a file really is an image is found out when it is read."""
    out: list[str | QueryError] = []
    for item in inputs:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            images = sorted(c for c in p.iterdir() if c.is_file() and is_image_name(c))
            if images:
                out += [str(c) for c in images]
            else:
                kinds = ", ".join(IMAGE_EXTENSIONS)
                sub = " (subdirectories are not searched)" if any(c.is_dir() for c in p.iterdir()) else ""
                out.append(QueryError(text, f"directory has no image files ({kinds}){sub}"))
        elif p.exists():
            out.append(text)
        else:
            out.append(QueryError(text, "no such file or directory"))
    return out


# --------------------------------------------------------------------------- #
# From a batch's numbers to results (both ways of answering: torch and served)
# --------------------------------------------------------------------------- #
@dataclass
class BatchAnswers:
    """A batch's answers as plain arrays, whichever runtime computed them.

    ``probs`` [B, E] P(emotion | image); ``posterior`` [B, S, E] P(source | image,
    emotion) over ``sources``; ``own``: source -> [B, E] its own distribution
    (NaN rows where absent); ``va``: per image the V/A estimate, or None."""

    contexts: list[str]
    sources: tuple[str, ...]
    probs: "object"  # numpy [B, E] float64
    posterior: "object"  # numpy [B, S, E]
    own: dict
    va: list | None = None


def assemble_results(answers: BatchAnswers, image_sizes, face_mask, face_boxes, face_probs, *, emotions,
                     sources_in, trust, provenance: dict, top: int) -> list[QueryResult]:
    """One :class:`QueryResult` per image. ``image_sizes`` [B, 2] (w, h); ``face_mask`` [B, 3];
    ``face_boxes`` [B, 3, 4]; ``face_probs`` [B, 3] (numpy); ``sources_in(context)``: the
    program's sources of a context; ``trust(context)``: P(source selected | context)."""
    import math

    import numpy as np

    from neural.common import FACE_SLOTS

    results = []
    for b, ctx in enumerate(answers.contexts):
        probs = answers.probs[b]
        existing = sources_in(ctx)
        pred = int(np.argmax(probs))
        post = {s: float(answers.posterior[b, answers.sources.index(s), pred]) for s in existing}
        ranked = sorted(range(len(emotions)), key=lambda e: -float(probs[e]))[:top]
        w, h = (int(v) for v in image_sizes[b])
        faces = []
        for k, slot in enumerate(FACE_SLOTS):
            if face_mask[b, k]:
                box = tuple(float(v) for v in face_boxes[b, k])
                size = math.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / (w * h))
                faces.append(Face(slot, box, float(face_probs[b, k]), size))
        own = {s: answers.own[s][b] for s in existing if s in answers.own and not np.isnan(answers.own[s][b]).any()}
        results.append(QueryResult(
            input="", image_size=(w, h), faces=faces, context=ctx,
            probs={e: float(probs[i]) for i, e in enumerate(emotions)},
            top=[(emotions[e], float(probs[e])) for e in ranked],
            source_probs={s: dict(zip(emotions, (float(v) for v in row))) for s, row in own.items()},
            trust=dict(trust(ctx)),
            posterior=dict(sorted(post.items(), key=lambda kv: -kv[1])),
            provenance={s: provenance[s] for s in existing if s in provenance},
            va=answers.va[b] if answers.va is not None else None,
        ))
    return results


def own_from_posterior(posterior, probs, index: int):
    """A source's own emotion distribution recovered from the logic output (a source
    no single network answers, e.g. ``va``): P_s(e) ∝ posterior[s, e] * P(e); NaN where
    the source carries no mass. numpy [B, S, E], [B, E] -> [B, E]."""
    import numpy as np

    joint = posterior[:, index, :].astype(np.float64) * probs.astype(np.float64)
    z = joint.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(z > 0, joint / np.maximum(z, 1e-300), np.nan)
