"""One Python API over both engines.

    model = LogicModel("context_selection", networks={"scene2emotion": head, "face_emotion": face})
    out = model(batch, explain=True)
    out.probs            # [B, 7]  P(emotion | image)
    out.posterior        # [B, S, 7]  P(source | image, emotion), 0 where a source is absent
    model.rule_table()   # {"trust(n1_large)": {"scene": 0.2, "face1": 0.8}, ...}

``networks`` maps each ``nn(Name, ...)`` of the program to a module that turns a
batch of tensors from the named source into distributions ``[b, K]``.
Rule parameters: the ``compiled`` engine keeps unconstrained logits (softmax per
annotated disjunction) trained with any torch optimizer; the ``deepproblog``
engine keeps DeepProbLog's probabilities trained with its ``SGD(param_lr)``.
``rule_optimizer`` hides the difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from logic.engines.compiled import compile_program
from logic.engines.deepproblog_engine import DeepProbLogEngine
from logic.program import Program, ProgramError, load_program
from neural.errors import UserError
from neural.vocabulary import EMOTIONS, emotion_index
from pipelines.context import CONTEXTS, DEFAULT_LARGE_FACE

ENGINES = ("compiled", "deepproblog")


@dataclass
class LogicOutput:
    probs: torch.Tensor  # [B, E] P(emotion | image)
    contexts: list[str]
    sources: tuple[str, ...]  # source order of ``posterior``
    posterior: torch.Tensor | None = None  # [B, S, E] P(source | image, emotion)

    def log_probs(self, eps: float = 1e-12) -> torch.Tensor:
        return self.probs.clamp_min(eps).log()


_COMPILED: dict = {}


def _compiled_program(program: Program, contexts, emotions, domains):
    """Compile once per program text and contexts in this process (about a second each)."""
    key = (str(program.path), program.text, contexts, emotions, tuple(sorted((k, tuple(v)) for k, v in domains.items())))
    if key not in _COMPILED:
        _COMPILED[key] = compile_program(program, contexts, emotions, domains)
    return _COMPILED[key]


class CompiledEngine(nn.Module):
    """Batched evaluation with one circuit compiled for all contexts (see engines/compiled.py)."""

    name = "compiled"

    def __init__(self, program: Program, networks: dict[str, nn.Module], contexts=CONTEXTS, emotions=EMOTIONS):
        super().__init__()
        self.program = program
        self.networks = networks
        self.emotions = tuple(emotions)
        self.domains = {n.network: n.domain for n in program.neural}
        self.compiled = _compiled_program(program, tuple(contexts), self.emotions, self.domains)
        self.context_index = {c: i for i, c in enumerate(self.compiled.contexts)}
        self.logits = nn.Parameter(torch.zeros(program.n_params, dtype=torch.float64))
        # parameter index -> (group, position) for the per-group softmax
        groups = [g.params for g in program.groups if len(g.params) > 1]
        width = max((len(g) for g in groups), default=1)
        self._group_idx = torch.tensor([list(g) + [g[0]] * (width - len(g)) for g in groups] or [[0]])
        self._group_mask = torch.tensor([[True] * len(g) + [False] * (width - len(g)) for g in groups] or [[False]])
        self._facts = torch.tensor([g.params[0] for g in program.groups if len(g.params) == 1], dtype=torch.long)
        self.set_rule_probs(program.initial_probabilities())

    # -- parameters ---------------------------------------------------------
    def rule_probs_tensor(self) -> torch.Tensor:
        """[n_params] probabilities: softmax of the logits within each group
        (a single-choice group is a probabilistic fact: sigmoid)."""
        x = self.logits[self._group_idx].masked_fill(~self._group_mask, float("-inf"))  # [G, W]
        p = torch.softmax(x, dim=1)
        probs = torch.zeros_like(self.logits).index_put((self._group_idx[self._group_mask],), p[self._group_mask])
        if len(self._facts):
            probs = probs.index_put((self._facts,), torch.sigmoid(self.logits[self._facts]))
        return probs

    def rule_probs(self) -> list[float]:
        return self.rule_probs_tensor().tolist()

    def set_rule_probs(self, probs) -> None:
        p = torch.as_tensor(probs, dtype=torch.float64).clamp(1e-12, 1.0)
        with torch.no_grad():
            for g in self.program.groups:
                idx = list(g.params)
                self.logits[idx] = torch.logit(p[idx]) if len(idx) == 1 else p[idx].log()

    # -- evaluation ---------------------------------------------------------
    def _leaf_blocks(self, batch, ctx: torch.Tensor, blocks) -> dict:
        """Each (network, source) block evaluated once, on the samples where the
        source exists, networks sharing inputs in one call. The rows of samples
        whose context does not read a block are filled with a uniform
        distribution: those leaves only enter roots of other contexts, which the
        sample never reads (and its own roots do not depend on them), so the
        fill keeps the one-circuit evaluation finite without changing any answer.
        A sample whose context needs a source it does not have is an error."""
        all_blocks = self.compiled.main.nn_blocks
        needs = self.compiled.needs[ctx][:, [all_blocks.index(b) for b in blocks]]  # [B, n_blocks]
        out = {}
        by_net: dict[str, list[int]] = {}
        for j, (net, _) in enumerate(blocks):
            by_net.setdefault(net, []).append(j)
        for net, js in by_net.items():
            xs, rows = [], []
            for j in js:
                src = blocks[j][1]
                present = batch.present(src)
                missing = needs[:, j] & ~present
                if missing.any():
                    bad = batch.sample_ids[int(missing.nonzero()[0])]
                    raise UserError(f"sample {bad}: its context needs source {src!r}, which is absent")
                use = needs[:, j]
                xs.append(batch.tensors[src][use])
                rows.append(use)
            y = self.networks[net](torch.cat(xs) if len(xs) > 1 else xs[0])  # [n, K]
            k = len(self.domains[net])
            start = 0
            for j, use in zip(js, rows):
                n = int(use.sum())
                full = torch.full((len(batch), k), 1.0 / k, dtype=y.dtype, device=y.device)
                out[blocks[j]] = full.index_put((use.nonzero().flatten(),), y[start:start + n])
                start += n
        return out

    def query(self, batch, contexts, sources, explain: bool, rule_probs=None):
        cp = self.compiled
        rule_probs = self.rule_probs_tensor() if rule_probs is None else rule_probs
        try:
            ctx = torch.tensor([self.context_index[c] for c in contexts], dtype=torch.long)
        except KeyError as exc:
            raise UserError(f"context {exc.args[0]!r} is not one of {', '.join(cp.contexts)}") from None
        leaves = self._leaf_blocks(batch, ctx, sorted(set(cp.main.nn_blocks) | set(cp.explain.nn_blocks)
                                                      if explain else cp.main.nn_blocks))
        r = cp.main.evaluate(leaves, rule_probs, len(batch))  # [B, n_roots]
        emotion = r.gather(1, cp.emotion_cols[ctx])  # [B, E]
        valid = r.gather(1, cp.valid_cols[ctx][:, None])[:, 0]  # [B]
        via = None
        if explain:
            order = [cp.sources.index(s) for s in sources]
            cols = cp.via_cols[ctx][:, order]  # [B, S, E]
            rv = cp.explain.evaluate(leaves, rule_probs, len(batch))
            via = rv.gather(1, cols.flatten(1)).view(cols.shape)
        return emotion, valid, via

    def selection(self, context: str, sources) -> dict[str, float]:
        cp = self.compiled
        i = self.context_index[context]
        with torch.no_grad():
            r = cp.selection.evaluate({}, self.rule_probs_tensor(), 1)[0]
        z = float(r[cp.selection_valid_cols[i]])
        return {s: float(r[cp.selected_cols[i, cp.sources.index(s)]]) / z for s in sources}


class LogicModel(nn.Module):
    """A program bound to networks, evaluated by one of the two engines."""

    def __init__(
        self,
        program: str | Path | Program,
        networks: dict[str, nn.Module],
        engine: str = "compiled",
        face_size_threshold: float = DEFAULT_LARGE_FACE,
        param_lr: float = 0.01,
        contexts: tuple[str, ...] = CONTEXTS,
    ):
        super().__init__()
        self.program = program if isinstance(program, Program) else load_program(program, check_bindings=False)
        missing = [n for n in self.program.networks if n not in networks]
        if missing:
            raise ProgramError(
                f"{self.program.path.name}: no network bound to {', '.join(missing)}; "
                f"bound: {', '.join(sorted(networks)) or 'none'}"
            )
        self.networks = nn.ModuleDict({k: networks[k] for k in self.program.networks})
        self.engine_name = engine
        self.face_size_threshold = face_size_threshold
        self.contexts = tuple(contexts)
        if engine == "compiled":
            self.engine = CompiledEngine(self.program, dict(self.networks), contexts=self.contexts)
        elif engine == "deepproblog":
            self.engine = DeepProbLogEngine(self.program, dict(self.networks), param_lr=param_lr)
        else:
            raise UserError(f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}")
        self.sources = self._all_sources()

    def _all_sources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in self.contexts:
            for s in self.source_probabilities_for(c):
                seen[s] = None
        return tuple(seen)

    # -- evaluation ---------------------------------------------------------
    def forward(self, batch, explain: bool = False, rule_probs: torch.Tensor | None = None) -> LogicOutput:
        contexts = batch.contexts(self.face_size_threshold)
        kw = {"rule_probs": rule_probs} if rule_probs is not None else {}
        emotion, valid, via = self.engine.query(batch, contexts, list(self.sources), explain, **kw)
        probs = emotion / valid.unsqueeze(1)  # condition on the chosen source existing
        posterior = None
        if explain:
            posterior = via / emotion.unsqueeze(1).clamp_min(1e-30)
        return LogicOutput(probs=probs, contexts=contexts, sources=self.sources, posterior=posterior)

    def label_log_probs(self, batch, eps: float = 1e-12) -> torch.Tensor:
        """log P(label | image) per sample, [B] (the training query)."""
        contexts = batch.contexts(self.face_size_threshold)
        if hasattr(self.engine, "label_query"):  # DeepProbLog: ground label queries only
            p_label, valid = self.engine.label_query(batch, contexts)
            return (p_label / valid).clamp_min(eps).log()
        out = self(batch)
        return out.log_probs(eps)[torch.arange(len(batch)), batch.labels]

    def emotion_probability(self, batch, emotion: str) -> torch.Tensor:
        """P(emotion | image) per sample, [B]; ``emotion`` must be in the vocabulary."""
        return self(batch).probs[:, emotion_index(emotion)]

    def nll(self, batch, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood of the batch's labels under the program."""
        if (batch.labels < 0).any():
            raise UserError("every training sample needs a label in the vocabulary")
        logp = self.label_log_probs(batch)
        if class_weights is None:
            return -logp.mean()
        w = class_weights.to(logp.dtype)[batch.labels]
        return -(w * logp).sum() / w.sum()

    # -- rule parameters ----------------------------------------------------
    def rule_probabilities(self) -> list[float]:
        return self.engine.rule_probs()

    def set_rule_probabilities(self, probs) -> None:
        self.engine.set_rule_probs(list(probs))

    def reset_rules(self, kind: str = "program") -> None:
        """``program``: the file's initial values; ``uniform``: uniform per group."""
        if kind == "program":
            self.set_rule_probabilities(self.program.initial_probabilities())
        elif kind == "uniform":
            probs = [0.0] * self.program.n_params
            for g in self.program.groups:
                for i in g.params:
                    probs[i] = 1.0 / len(g.params) if len(g.params) > 1 else 0.5
            self.set_rule_probabilities(probs)
        else:
            raise ValueError(f"unknown rule initialisation {kind!r}")

    def rule_table(self) -> dict[str, dict[str, float]]:
        probs = self.rule_probabilities()
        return {g.key: {o: probs[i] for o, i in zip(g.options, g.params)} for g in self.program.groups}

    def source_probabilities_for(self, context: str) -> dict[str, float]:
        """P(source selected | chosen source exists) in ``context``."""
        return self.engine.selection(context, self.program.sources_in(context))

    def source_probabilities(self) -> dict[str, dict[str, float]]:
        """P(source selected | context) for every context: what the program learned about trust."""
        return {c: self.source_probabilities_for(c) for c in self.contexts}

    def rule_optimizer(self, lr: float, kind: str = "adam"):
        """An optimizer over the rule parameters with ``zero_grad()``/``step()``."""
        if self.engine_name == "deepproblog":
            self.engine.set_lr(lr)
            return self.engine  # DeepProbLog's own SGD(param_lr)
        if kind == "adam":
            return torch.optim.Adam([self.engine.logits], lr=lr)
        if kind == "sgd":
            return torch.optim.SGD([self.engine.logits], lr=lr)
        raise ValueError(f"unknown optimizer {kind!r}")

    # -- persistence --------------------------------------------------------
    def rules_state(self) -> dict:
        return {
            "program": self.program.name,
            "program_path": str(self.program.path),
            "engine": self.engine_name,
            "face_size_threshold": self.face_size_threshold,
            "probabilities": self.rule_probabilities(),
            "groups": self.rule_table(),
        }

    def save_rules(self, path: str | Path) -> None:
        from neural.files import atomic_write_bytes

        atomic_write_bytes(Path(path), json.dumps(self.rules_state(), indent=2).encode())

    def load_rules(self, path: str | Path) -> None:
        state = json.loads(Path(path).read_text())
        if state.get("program") != self.program.name:
            raise UserError(f"{path}: rules of program {state.get('program')!r}, not {self.program.name!r}")
        self.set_rule_probabilities(state["probabilities"])
