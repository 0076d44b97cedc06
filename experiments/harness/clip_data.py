"""Data for the clip track of the harness: a clip data set, its verified tensor
cache (:mod:`experiments.harness.data`), and the fusion net's frozen-encoder features per split.

    data = load_clip_data(cfg)       # generate/read the set, build or reuse the clip cache
    feats = clip_features(data, progress=True)   # {split: ClipFeatures}, cached on disk

The frozen encoders of :class:`~neural.multimodal.MultimodalFusionNet` (text
model, R3D-18 trunk, audio conv stack) never learn, so every clip's
``frozen_features`` ([F] = [text hidden | 512 | 128]) is computed once and
stored next to the tensor cache::

    <cache>/features/<key>/features.json          what the key is made of; per split: counts, skips
    <cache>/features/<key>/<split>.safetensors    feats [N, F] float32, labels [N], sentiments [N]
                                                  (metadata: sample_ids, skipped)

``key`` hashes the clip pipeline config, the tokenizer identity (from the cache
manifest), the fusion config and the encoders' weights identity
(:func:`encoder_identity`): another config gets another directory, the same one
is reused. A split whose cached clips changed (other ids) is recomputed. Every
file is written atomically.

Random parts of the frozen encoders (the R3D-18 trunk when no ``video_weights``
are given, the audio conv stack always) are drawn under :data:`ENCODER_SEED`
(:func:`build_fusion_net`), so they are the same in every run and seed and the
features stay valid; the identity records torch's and transformers' versions,
whose initialisers decide those draws.

Clips the fusion net cannot read are left out here with a reason, never filled
in: a clip without audio (the cache keeps it, flagged, with NaN audio; the net
has three inputs and no notion of a missing one) and a clip without an emotion
or a sentiment label. Together with the data set's skips (missing clip, bad
row) and the cache's (corrupt clip, empty utterance) they are the run's
``skipped`` list.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cache.loader import CachedSplit
from experiments.harness.config import HarnessConfig
from experiments.harness.data import SPLITS, CachedData, load_cached
from experiments.runs import config_fingerprint
from neural.common import EMOTIONS, SENTIMENTS, UserError, atomic_write_bytes, sha256_file
from neural.multimodal import (
    MultimodalFusionConfig,
    MultimodalFusionNet,
    packaged_minilm_path,
)
from pipelines.clips import ClipPipelineConfig

#: Seed under which the fusion net is built, so its random frozen parts are the same everywhere.
ENCODER_SEED = 0
#: Bumped when what a feature file holds changes, so old ones are not reused.
FEATURES_VERSION = 1
FEATURE_BATCH = 16
NO_AUDIO = "no audio: the fusion net reads text, video and audio, and this clip has no audio stream"


@dataclass
class ClipFeatures:
    """One split's frozen-encoder features, with both labels, by sample id."""

    split: str
    sample_ids: list[str]
    feats: torch.Tensor  # [N, F] float32
    labels: torch.Tensor  # [N] long, emotion index
    sentiments: torch.Tensor  # [N] long, index into SENTIMENTS
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample id, reason)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def triple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(feats, emotion labels, sentiment labels)``: the recipe's feature set."""
        return self.feats, self.labels, self.sentiments

    def polarity_table(self) -> dict[str, dict[str, float]]:
        """The observed P(sentiment | emotion) of these clips (rows of emotions with clips)."""
        return empirical_polarity(self.labels, self.sentiments)


def empirical_polarity(labels: torch.Tensor, sentiments: torch.Tensor) -> dict[str, dict[str, float]]:
    """Observed P(sentiment | emotion) of labelled clips: ``{emotion: {sentiment: p}}``."""
    out = {}
    for e, name in enumerate(EMOTIONS):
        counts = torch.bincount(sentiments[labels == e], minlength=len(SENTIMENTS)).double()
        if counts.sum() > 0:
            out[name] = {s: float(c) for s, c in zip(SENTIMENTS, (counts / counts.sum()).tolist())}
    return out


@dataclass
class ClipExperimentData(CachedData):
    fusion: MultimodalFusionConfig | None = None
    truth_polarity: dict | None = None  # synthetic_clips: the generator's P(sentiment | emotion)
    _base_net: MultimodalFusionNet | None = None

    def base_net(self) -> MultimodalFusionNet:
        """The fusion net as built (frozen encoders, untrained trainable parts); built once."""
        if self._base_net is None:
            self._base_net = build_fusion_net(self.fusion)
        return self._base_net


# --------------------------------------------------------------------------- #
# Configs
# --------------------------------------------------------------------------- #
def clip_pipeline_config(cfg: HarnessConfig) -> ClipPipelineConfig:
    """The clip pipeline of a (resolved) config."""
    return ClipPipelineConfig(frames=cfg.clip_frames, frame_size=cfg.clip_size, max_seconds=cfg.clip_seconds,
                              text_model=cfg.text_model)


def fusion_config(cfg: HarnessConfig, pipeline: ClipPipelineConfig) -> MultimodalFusionConfig:
    return MultimodalFusionConfig(text_model=cfg.text_model or str(packaged_minilm_path()),
                                  video_weights=cfg.video_weights, n_mels=pipeline.n_mels)


def build_fusion_net(fusion: MultimodalFusionConfig) -> MultimodalFusionNet:
    """The fusion net, built under :data:`ENCODER_SEED` (the caller's RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ENCODER_SEED)
        with warnings.catch_warnings():
            # without video weights the net says so on its logger; once is enough
            warnings.simplefilter("ignore", UserWarning)
            return MultimodalFusionNet(fusion)


def _text_model_id(name: str) -> str:
    path = Path(name)
    if not path.is_dir():
        return name  # a hub name: its files are whatever the hub cache holds for it
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + sha256_file(p).encode())
    return f"sha256:{h.hexdigest()[:16]}"


def encoder_identity(fusion: MultimodalFusionConfig) -> dict:
    """What the frozen encoders' outputs depend on besides the inputs: weights by content,
    and for the randomly initialised parts the seed and the library versions."""
    import transformers

    return {
        "text_model": _text_model_id(fusion.text_model),
        "video_weights": sha256_file(fusion.video_weights)[:16] if fusion.video_weights else None,
        "random_init": {"seed": ENCODER_SEED, "torch": torch.__version__, "transformers": transformers.__version__},
        "n_mels": fusion.n_mels,
    }


# --------------------------------------------------------------------------- #
# Data set and cache
# --------------------------------------------------------------------------- #
def load_clip_data(cfg: HarnessConfig, progress: bool | None = None) -> ClipExperimentData:
    """Load (generating the synthetic set if needed) the clip data set and build or reuse its cache."""
    pipeline = clip_pipeline_config(cfg)
    cached = load_cached(cfg, pipeline, CachedSplit, progress)
    data = ClipExperimentData(**{f.name: getattr(cached, f.name) for f in dataclasses.fields(CachedData)},
                              fusion=fusion_config(cfg, pipeline))
    if cfg.dataset == "synthetic_clips":
        from pipelines.datasets.synthetic_clips import read_truth

        data.truth_polarity = read_truth(data.dataset.source)["polarity_table"]
    return data


# --------------------------------------------------------------------------- #
# Frozen-encoder features
# --------------------------------------------------------------------------- #
def features_key(data: ClipExperimentData) -> dict:
    fusion = {k: v for k, v in dataclasses.asdict(data.fusion).items() if k not in ("text_model", "video_weights")}
    return {
        "version": FEATURES_VERSION,
        "pipeline": data.pipeline.semantic_dict(),
        "tokenizer": data.split("train").identity.get("tokenizer"),
        "fusion": fusion,
        "encoders": encoder_identity(data.fusion),
    }


def features_dir(data: ClipExperimentData) -> Path:
    return data.cache_dir / "features" / config_fingerprint(features_key(data))


def _save_split(path: Path, f: ClipFeatures) -> None:
    from safetensors.torch import save

    tensors = {"feats": f.feats.contiguous(), "labels": f.labels, "sentiments": f.sentiments}
    meta = {"sample_ids": json.dumps(f.sample_ids), "skipped": json.dumps(f.skipped)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _load_split(path: Path, split: str) -> ClipFeatures | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            t = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        return ClipFeatures(split, json.loads(meta["sample_ids"]), t["feats"], t["labels"], t["sentiments"],
                            [tuple(s) for s in json.loads(meta["skipped"])])
    except (OSError, ValueError, KeyError, RuntimeError):  # a damaged file is recomputed, never trusted
        return None


@torch.no_grad()
def compute_features(net: MultimodalFusionNet, split: CachedSplit, name: str, progress: bool = False,
                     device: str = "cpu") -> ClipFeatures:
    """``net.frozen_features`` of every usable clip of ``split`` (see the module docstring for what is left out),
    the encoders run on ``device``."""
    net.to(device)
    ids, feats, labels, sentiments, skipped = [], [], [], [], []
    n_batches = (len(split) + FEATURE_BATCH - 1) // FEATURE_BATCH
    for b in tqdm(split.batches(FEATURE_BATCH), total=n_batches, desc=f"features {name}", unit="batch",
                  leave=False, disable=not progress):
        keep = []
        for i, sid in enumerate(b.sample_ids):
            if b.labels[i] < 0 or b.sentiments[i] < 0:
                skipped.append((sid, "no label: the clip needs an emotion and a sentiment label"))
            elif not bool(b.audio_present[i]):
                skipped.append((sid, NO_AUDIO))
            else:
                keep.append(i)
        if not keep:
            continue
        b = b.select(keep)
        # [b, M] x2, [b, 3, T, S, S], [b, n_mels, L] -> [b, F]
        feats.append(net.frozen_features(b.input_ids.to(device), b.attention_mask.to(device),
                                         b.video_input().to(device), b.audio.to(device)).float().cpu())
        ids += b.sample_ids
        labels.append(b.labels)
        sentiments.append(b.sentiments)
    net.cpu()  # the fusion net is built once and shared: back where the rest of the track reads it
    if not ids:
        raise UserError(f"split {name}: no clip the fusion net can read ({len(skipped)} left out, e.g. "
                        f"{skipped[0][0]}: {skipped[0][1]})" if skipped else f"split {name} is empty")
    return ClipFeatures(name, ids, torch.cat(feats), torch.cat(labels), torch.cat(sentiments), skipped)


def clip_features(data: ClipExperimentData, progress: bool = False, log=print, device: str = "cpu") -> dict[str, ClipFeatures]:
    """Every split's features: read from ``features_dir(data)`` when present for the
    cached clips, else computed with :meth:`ClipExperimentData.base_net` and written there."""
    directory = features_dir(data)
    out, computed = {}, []
    for name in SPLITS:
        split = data.split(name)
        cached = _load_split(directory / f"{name}.safetensors", name)
        # reused only for the same clips with the same labels (a relabelled clip's cached row is stale)
        if (cached is not None and sorted(cached.sample_ids + [s for s, _ in cached.skipped]) == sorted(split.sample_ids)
                and torch.equal(cached.labels, split.labels(cached.sample_ids))
                and torch.equal(cached.sentiments, split.column("sentiments", cached.sample_ids))):
            out[name] = cached
            continue
        out[name] = compute_features(data.base_net(), split, name, progress, device)
        _save_split(directory / f"{name}.safetensors", out[name])
        computed.append(name)
    summary = {"key": features_key(data),
               "splits": {n: {"n": len(f), "skipped": f.skipped} for n, f in out.items()}}
    if computed or not (directory / "features.json").is_file():
        atomic_write_bytes(directory / "features.json", json.dumps(summary, indent=1).encode())
    what = f"computed for {', '.join(computed)}" if computed else "reused"
    log(f"frozen-encoder features ({out['train'].feats.shape[1]}-d) {what}: {directory}")
    reasons = Counter(r for f in out.values() for _, r in f.skipped)
    for reason, n in reasons.items():
        log(f"  {n} clip(s) left out: {reason}")
    return out
