"""The ``deepproblog`` engine: the reference, DeepProbLog as its authors ship it.

A DeepProbLog ``Model`` over the program file, its ``ExactEngine`` with circuit
caching (queries are parameterised by a placeholder image, so one circuit per
ground query is compiled and reused), networks wrapped as DeepProbLog ``Network``s
reading named tensor sources keyed by sample id (``tensor(face1(Id))``), and
DeepProbLog's ``SGD(param_lr)`` for the ``t(_)`` parameters — the faithful
reproduction of the source notes. It evaluates one query at a time.
"""
from __future__ import annotations

import contextlib
import io

import torch
from problog.logic import Term
from torch import nn

from logic.engines.base import FALSE, PLACEHOLDER, Engine, register_engine


class _SampleTensors:
    """A DeepProbLog tensor source: ``source[(Term(sample_id),)] -> tensor``."""

    def __init__(self):
        self.rows: dict[str, torch.Tensor] = {}

    def __getitem__(self, key):
        sample = key[0] if isinstance(key, tuple) else key
        name = sample.functor if isinstance(sample, Term) else str(sample)
        try:
            return self.rows[name]
        except KeyError:  # the logic asked for a tensor that does not exist
            raise KeyError(f"no tensor for sample {name!r} in this source") from None


@register_engine
class DeepProbLogEngine(Engine):
    name = "deepproblog"
    placement = "DeepProbLog's exact engine on the CPU, one query at a time"
    batched = False
    cpu_only = True
    torch_rules = False
    rule_training = "DeepProbLog's SGD(param_lr) on the probabilities, clipped and renormalised per disjunction"

    def compile(self, networks: dict[str, nn.Module], param_lr: float = 0.01) -> None:
        from deepproblog.engines import ExactEngine
        from deepproblog.model import Model
        from deepproblog.network import Network
        from deepproblog.optimizer import SGD

        if self.spec.check is not None:
            self.spec.check(self.program)
        self.dp_networks = [Network(networks[n], n, batching=True) for n in self.program.networks]
        self.model = Model(str(self.program.path), self.dp_networks)
        with contextlib.redirect_stdout(io.StringIO()):  # its "Caching ACs" notice would break --json output
            self.model.set_engine(ExactEngine(self.model), cache=True)
        self.model.optimizer = SGD(self.model, param_lr)
        self._tensor_sources: dict[str, _SampleTensors] = {}
        if len(self.model.parameters) != self.program.n_params:  # both must index the same parameters
            raise RuntimeError("DeepProbLog and emologic disagree on the program's parameters")

    # -- rule parameters: DeepProbLog's own, trained by its SGD ------------------
    def rule_probs(self) -> list[float]:
        return [float(p) for p in self.model.parameters]

    def rule_probs_tensor(self) -> torch.Tensor:
        return torch.tensor(self.rule_probs(), dtype=torch.float64)

    def set_rule_probs(self, probs) -> None:
        self.model.parameters[:] = [float(p) for p in probs]

    def rule_parameters(self) -> list[nn.Parameter]:
        return []  # not torch parameters: DeepProbLog's optimizer trains them (rule_optimizer)

    def rule_optimizer(self, lr: float, kind: str = "sgd"):
        """DeepProbLog's own ``SGD(param_lr=lr)`` (``kind`` does not apply: it is the only one)."""
        self.model.optimizer.param_lr = lr
        return self

    def rule_grads(self) -> list[float]:
        """Accumulated dLoss/dt_i since the last ``zero_grad`` (DeepProbLog's hooks)."""
        g = self.model.optimizer._params_grad
        return [float(g[i]) if i in g else 0.0 for i in range(self.program.n_params)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.optimizer.zero_grad()

    def step(self) -> None:
        """DeepProbLog's SGD step: gradient step, clip to [0, 1], renormalise groups."""
        self.model.optimizer.step()

    def train(self, mode: bool = True):
        super().train(mode)
        for n in self.dp_networks:
            n.train() if mode else n.eval()
        return self

    # -- evaluation --------------------------------------------------------------
    def _bind(self, batch) -> None:
        for name, tensor in batch.tensors.items():
            src = self._tensor_sources.get(name)
            if src is None:
                src = self._tensor_sources[name] = _SampleTensors()
                self.model.add_tensor_source(name, src)
            src.rows = {sid: tensor[i] for i, sid in enumerate(batch.sample_ids)}

    def _solve(self, terms_and_ids):
        from deepproblog.query import Query

        queries = [Query(t, substitution={PLACEHOLDER: Term(sid)}) for t, sid in terms_and_ids]
        return [r.result for r in self.model.solve(queries)]

    def ground_values(self, batch, terms_per_sample: list[list[Term]]) -> torch.Tensor:
        """Probabilities of ground queries about each sample: ``[B, n]`` for ``n``
        terms per sample (written with the placeholder ``img``).

        Queries are always ground (``emotion(img, ctx, happy)``): DeepProbLog's
        exact engine evaluates a ground query's circuit in milliseconds but a
        query with an output variable in hundreds of milliseconds.
        """
        self._bind(batch)
        width = len(terms_per_sample[0])
        values = self._values([(t, sid) for terms, sid in zip(terms_per_sample, batch.sample_ids) for t in terms])
        return torch.stack(values).view(len(batch), width)

    def evaluate(self, batch, contexts, requests, rule_probs=None) -> list[torch.Tensor]:
        if rule_probs is not None:
            raise ValueError("the deepproblog engine evaluates its own rule probabilities (set_rule_probs)")
        ctx = contexts.tolist()
        out = []
        for family, sub in requests:
            f = self.spec.families[family]
            subs = [0] * len(ctx) if sub is None else sub.tolist()
            out.append(self.ground_values(batch, [f.rows[c * f.per_context + s] for c, s in zip(ctx, subs)]))
        return out

    def evaluate_static(self, family: str, key: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(self._values([(t, "none") for t in self.spec.families[family].rows[key]]))

    def _values(self, terms_and_ids) -> list[torch.Tensor]:
        """The probability of each ground query (0 for a query with no proof, or false by construction)."""
        dtype = torch.get_default_dtype()
        asked = [(t, sid) for t, sid in terms_and_ids if t != FALSE]
        results = iter(self._solve(asked)) if asked else iter(())
        out = []
        for term, sid in terms_and_ids:
            v = 0.0 if term == FALSE else next(results).get(term.apply_term({PLACEHOLDER: Term(sid)}), 0.0)
            out.append(v if torch.is_tensor(v) else torch.tensor(float(v), dtype=dtype))
        return out
