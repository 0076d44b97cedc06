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
