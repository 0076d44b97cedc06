"""The ``deepproblog`` engine: the reference, DeepProbLog as its authors ship it.

A DeepProbLog ``Model`` over the program file, its ``ExactEngine`` with circuit
caching (queries are parameterised by a placeholder image, so one circuit per
context is compiled and reused), networks wrapped as DeepProbLog ``Network``s
reading named tensor sources keyed by sample id (``tensor(face1(Id))``), and
DeepProbLog's ``SGD(param_lr)`` for the ``t(_)`` parameters — the faithful
reproduction of the source notes. It evaluates one query at a time.
"""
from __future__ import annotations

import contextlib
import io

import torch
from problog.logic import Term

from logic.program import Program
from neural.vocabulary import EMOTIONS

PLACEHOLDER = Term("img")


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


class DeepProbLogEngine:
    name = "deepproblog"
    placement = "DeepProbLog's exact engine on the CPU, one query at a time"

    def __init__(self, program: Program, networks: dict[str, torch.nn.Module], param_lr: float = 0.01, emotions=EMOTIONS):
        from deepproblog.engines import ExactEngine
        from deepproblog.model import Model
        from deepproblog.network import Network
        from deepproblog.optimizer import SGD

        self.program = program
        self.emotions = tuple(emotions)
        self.dp_networks = [Network(networks[n], n, batching=True) for n in program.networks]
        self.model = Model(str(program.path), self.dp_networks)
        with contextlib.redirect_stdout(io.StringIO()):  # its "Caching ACs" notice would break --json output
            self.model.set_engine(ExactEngine(self.model), cache=True)
        self.model.optimizer = SGD(self.model, param_lr)
        self.sources: dict[str, _SampleTensors] = {}
        if len(self.model.parameters) != program.n_params:  # both must index the same parameters
            raise RuntimeError("DeepProbLog and emologic disagree on the program's parameters")

    # -- parameters ---------------------------------------------------------
    def rule_probs(self) -> list[float]:
        return [float(p) for p in self.model.parameters]

    def set_rule_probs(self, probs) -> None:
        self.model.parameters[:] = [float(p) for p in probs]

    def rule_grads(self) -> list[float]:
        """Accumulated dLoss/dt_i since the last ``zero_grad`` (DeepProbLog's hooks)."""
        g = self.model.optimizer._params_grad
        return [float(g[i]) if i in g else 0.0 for i in range(self.program.n_params)]

    def zero_grad(self) -> None:
        self.model.optimizer.zero_grad()

    def step(self) -> None:
        """DeepProbLog's SGD step: gradient step, clip to [0, 1], renormalise groups."""
        self.model.optimizer.step()

    def set_lr(self, lr: float) -> None:
        self.model.optimizer.param_lr = lr

    def train(self, mode: bool = True) -> None:
        for n in self.dp_networks:
            n.train() if mode else n.eval()

    # -- evaluation ---------------------------------------------------------
    def _bind(self, batch) -> None:
        for name, tensor in batch.tensors.items():
            src = self.sources.get(name)
            if src is None:
                src = self.sources[name] = _SampleTensors()
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

    def query(self, batch, contexts: list[str], sources: list[str], explain: bool):
        """Joint probabilities per sample: emotion [B, E], valid [B], via [B, S, E] or None."""
        emotions = self.emotions
        per_sample = [[Term("valid", PLACEHOLDER, Term(c))] + [Term("emotion", PLACEHOLDER, Term(c), Term(e)) for e in emotions]
                      + ([Term("via", PLACEHOLDER, Term(c), Term(s), Term(e)) for s in sources for e in emotions] if explain else [])
                      for c in contexts]
        table = self.ground_values(batch, per_sample)  # [B, 1 + E (+ S*E)]
        valid, emotion = table[:, 0], table[:, 1:1 + len(emotions)]
        via = table[:, 1 + len(emotions):].reshape(len(batch), len(sources), len(emotions)) if explain else None
        return emotion, valid, via

    def label_query(self, batch, contexts: list[str]):
        """P(emotion(img, ctx, label)) and P(valid(img, ctx)) per sample: [B], [B]."""
        table = self.ground_values(batch, [
            [Term("emotion", PLACEHOLDER, Term(c), Term(self.emotions[y])), Term("valid", PLACEHOLDER, Term(c))]
            for c, y in zip(contexts, batch.labels.tolist())
        ])
        return table[:, 0], table[:, 1]

    def _values(self, terms_and_ids) -> list[torch.Tensor]:
        """The probability of each ground query (0 for a query with no proof)."""
        dtype = torch.get_default_dtype()
        out = []
        for (term, sid), result in zip(terms_and_ids, self._solve(terms_and_ids)):
            v = result.get(term.apply_term({PLACEHOLDER: Term(sid)}), 0.0)
            out.append(v if torch.is_tensor(v) else torch.tensor(float(v), dtype=dtype))
        return out

    def selection(self, context: str, sources: list[str]) -> dict[str, float]:
        """P(source selected | valid) in ``context`` (no network involved)."""
        terms = [(Term("valid", PLACEHOLDER, Term(context)), "none")]
        terms += [(Term("selected", PLACEHOLDER, Term(context), Term(s)), "none") for s in sources]
        with torch.no_grad():
            values = [float(v) for v in self._values(terms)]
        return {s: v / values[0] for s, v in zip(sources, values[1:])}
