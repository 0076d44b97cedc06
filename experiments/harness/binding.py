"""Binding an image program's neural predicates to the stage-0 networks of a seed.

Which network reads which cached tensor comes from the program
(``Program.tensor_networks``); the networks come from stage 0
(:meth:`experiments.harness.image_stage0.Predicates.bound`: the scene head, the face net
and the program's networks on registered features, e.g. a plug-in's). A network of the
program that stage 0 does not train is a parameter-free adapter on the V/A regressor's
output (the valence and arousal bins): its tensor is the regressor's prediction.
"""
from __future__ import annotations

import torch
from torch import nn

from cache.batch import Batch
from experiments.harness.image_stage0 import Predicates
from logic.given import given_networks
from logic.program import Program
from neural.provenance import provenance_of, source_provenance
from neural.registry import get_network


class Layer4Head(nn.Module):
    """The scene predicate when layer4 is trained: [B, 256, h, w] -> layer4 -> pool -> head -> [B, 7]."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.from_layer3(f))

    @property
    def provenance(self):
        return provenance_of(self.head)


class Binding:
    """The networks the program's ``nn`` names are bound to in one regime, and
    how a cached batch becomes the tensors those networks read."""

    def __init__(self, program: Program, pred: Predicates):
        self.program, self.pred = program, pred
        trained = pred.bound()
        if pred.scene_layer4 is not None:  # the scene predicate reads layer3 features through the trained layer4
            self.layer4_source = next(src for src, nets in program.tensor_networks.items()
                                      if pred.scene_head in (trained.get(n) for n in nets))
            trained = {n: Layer4Head(pred.scene_layer4, m) if m is pred.scene_head else m for n, m in trained.items()}
        self.networks: dict[str, nn.Module] = {n: trained[n] if n in trained else get_network(n)
                                               for n in program.networks}
        adapters = {n for n in program.networks if n not in trained}
        #: the tensors read through the V/A regressor (by its bin adapters)
        self.va_sources = [src for src, nets in program.tensor_networks.items() if adapters & set(nets)]
        self.uses_va = bool(self.va_sources)

    def provenance(self, features: dict) -> dict[str, dict]:
        """Per source: where its networks' knowledge came from (:func:`neural.provenance.source_provenance`);
        ``features``: :func:`pipelines.pipeline.feature_provenance` of the cache the run read."""
        features = {k: dict(v) for k, v in features.items()}
        for src in self.va_sources:
            features.setdefault(src, {})[self.pred.va_regressor.registry_name] = provenance_of(self.pred.va_regressor)
        return source_provenance(self.program.tensor_networks, self.networks, features)

    def source_outputs(self, prepared: Batch) -> dict[str, torch.Tensor]:
        """Each source's network outputs ``[B, K]`` float32: one network's output, NaN where
        the source is absent; several networks' outputs side by side (the V/A bins)."""
        out = {}
        for src, nets in self.program.tensor_networks.items():
            if len(nets) > 1:
                x = prepared.tensors[src]
                out[src] = torch.cat([self.networks[n](x) for n in nets], 1)
                continue
            present = prepared.present(src)
            t = torch.full((len(prepared), self.program.sources[src].width), float("nan"))
            if present.any():
                t[present] = self.networks[nets[0]](prepared.tensors[src][present]).float()
            out[src] = t
        return out

    def feeds(self) -> dict[str, str]:
        """Source -> the cached tensor it is filled from (before the V/A regressor, if any):
        its own, except a scene source read through the trained layer4, which reads layer3."""
        out = {src: self.program.sources[src].feature for src in self.program.tensor_networks}
        if self.pred.scene_layer4 is not None:
            out[self.layer4_source] = f"{self.layer4_source}_layer3"
        return out

    def prepare(self, batch: Batch) -> Batch:
        tensors = dict(batch.tensors)
        for src, feature in self.feeds().items():
            if feature != src:
                tensors[src] = tensors[feature]
        if self.uses_va:
            from neural.va import va_predicate_input

            va = self.pred.va_regressor
            # Training through the logic keeps MC dropout *with* gradients: the loss is
            # taken on the same Gaussian bin mass (mean and variance of the dropout
            # passes) that evaluation and query use, so the circumplex table and the
            # trust are learned against the distribution they will be read with, and
            # the heads learn their uncertainty too. Training on the mean alone would
            # leave only the min_std floor as variance: near-hard bins, vanishing
            # gradients far from the edges, and a train/eval mismatch. The heads are
            # small MLPs on cached features, so n passes cost little.
            mc = va.mc_predict_with_grad if torch.is_grad_enabled() and va.training else va.mc_predict
            for src in self.va_sources:
                tensors[src] = va_predicate_input(*mc(tensors[src]))
        return batch.with_tensors(tensors)


class FrozenBinding:
    """Frozen networks: their outputs are computed once per sample, and the
    program's predicates read them through :class:`Given` stand-ins (a slice of
    the source's row where several networks read one source)."""

    def __init__(self, binding: Binding, splits: dict):
        self.program = binding.program
        self.networks: dict[str, nn.Module] = given_networks(self.program)
        self.rows: dict[str, int] = {}
        outputs: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for split in splits.values():
                for batch in split.batches(512):
                    for src, out in binding.source_outputs(binding.prepare(batch)).items():
                        outputs.setdefault(src, []).append(out)
                    for sid in batch.sample_ids:
                        self.rows[sid] = len(self.rows)
        self.table = {src: torch.cat(parts) for src, parts in outputs.items()}

    def prepare(self, batch: Batch) -> Batch:
        idx = torch.tensor([self.rows[s] for s in batch.sample_ids])
        # the table is computed once on the CPU; its rows go where the batch is
        return batch.with_tensors({src: t[idx].to(batch.labels.device) for src, t in self.table.items()})
