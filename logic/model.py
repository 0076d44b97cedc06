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

from logic.engines.compiled import compile_context
from logic.engines.deepproblog_engine import DeepProbLogEngine
from logic.program import Program, ProgramError, load_program
from neural.errors import UserError
from neural.vocabulary import EMOTIONS
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


class CompiledEngine(nn.Module):
    """Batched evaluation with circuits compiled once per context (see engines/compiled.py)."""

    name = "compiled"

    def __init__(self, program: Program, networks: dict[str, nn.Module], emotions=EMOTIONS):
        super().__init__()
        self.program = program
        self.networks = networks
        self.emotions = tuple(emotions)
        self.domains = {n.network: n.domain for n in program.neural}
        self._compiled: dict = {}
        init = torch.tensor(program.initial_probabilities(), dtype=torch.float64)
        self.logits = nn.Parameter(torch.zeros(program.n_params, dtype=torch.float64))
        self.set_rule_probs(init)

    def compiled(self, context: str):
        if context not in self._compiled:
            self._compiled[context] = compile_context(self.program, context, self.emotions, self.domains)
        return self._compiled[context]

    # -- parameters ---------------------------------------------------------
    def rule_probs_tensor(self) -> torch.Tensor:
        """[n_params] probabilities: softmax of the logits within each group
        (a single-choice group is a probabilistic fact: sigmoid)."""
        parts = torch.empty_like(self.logits)
        for g in self.program.groups:
            idx = list(g.params)
            x = self.logits[idx]
            parts = parts.index_put((torch.tensor(idx),), torch.sigmoid(x) if len(idx) == 1 else torch.softmax(x, 0))
        return parts

    def rule_probs(self) -> list[float]:
        return self.rule_probs_tensor().tolist()

    def set_rule_probs(self, probs) -> None:
        p = torch.as_tensor(probs, dtype=torch.float64).clamp(1e-12, 1.0)
        with torch.no_grad():
            for g in self.program.groups:
                idx = list(g.params)
                self.logits[idx] = torch.logit(p[idx]) if len(idx) == 1 else p[idx].log()

    # -- evaluation ---------------------------------------------------------
    def _network_outputs(self, batch, needed: set) -> dict:
        """Each (network, source) evaluated once on the samples where the source
        exists; rows of absent sources stay NaN and are never read."""
        out = {}
        by_net: dict[str, list[str]] = {}
        for net, src in sorted(needed):
            by_net.setdefault(net, []).append(src)
        for net, srcs in by_net.items():
            xs, spans = [], []
            for src in srcs:
                present = batch.present(src)
                xs.append(batch.tensors[src][present])
                spans.append((src, present))
            y = self.networks[net](torch.cat(xs)) if len(xs) > 1 else self.networks[net](xs[0])  # [n, K]
            start = 0
            for src, present in spans:
                k = int(present.sum())
                full = torch.full((len(batch), y.shape[1]), float("nan"), dtype=y.dtype, device=y.device)
                full = full.index_put((present.nonzero().flatten(),), y[start:start + k])
                out[(net, src)] = full
                start += k
        return out

    def query(self, batch, contexts, sources, explain: bool, rule_probs=None):
        rule_probs = self.rule_probs_tensor() if rule_probs is None else rule_probs
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(contexts):
            groups.setdefault(c, []).append(i)
        compiled = {c: self.compiled(c) for c in groups}
        needed = {blk for cc in compiled.values() for blk in cc.main.nn_blocks}
        nn_out = self._network_outputs(batch, needed)
        n, e = len(batch), len(self.emotions)
        dtype = rule_probs.dtype
        emotion = torch.zeros(n, e, dtype=dtype)
        valid = torch.zeros(n, dtype=dtype)
        via = torch.zeros(n, len(sources), e, dtype=dtype) if explain else None
        for c, rows in groups.items():
            cc = compiled[c]
            idx = torch.tensor(rows)
            outs = {blk: nn_out[blk][idx] for blk in cc.main.nn_blocks}
            for blk, v in outs.items():
                if torch.isnan(v).any():
                    bad = batch.sample_ids[rows[int(torch.isnan(v).any(1).nonzero()[0])]]
                    raise UserError(f"sample {bad}: context {c} needs source {blk[1]!r}, which is absent")
            r = cc.main.evaluate(outs, rule_probs, len(rows))
            emotion = emotion.index_put((idx,), r[:, cc.emotion_cols])
            valid = valid.index_put((idx,), r[:, cc.valid_col])
            if explain:
                for s, cols in zip(cc.sources, cc.via_cols):
                    via = via.index_put((idx, torch.tensor(sources.index(s))), r[:, cols])
        return emotion, valid, via

    def selection(self, context: str, sources) -> dict[str, float]:
        cc = self.compiled(context)
        with torch.no_grad():
            r = cc.selection.evaluate({}, self.rule_probs_tensor(), 1)[0]
        z = float(r[cc.selection_valid_col])
        return {s: float(r[col]) / z for s, col in zip(cc.sources, cc.selected_cols)}


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
            self.engine = CompiledEngine(self.program, dict(self.networks))
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

    def rule_parameters(self) -> list[torch.Tensor]:
        return [self.engine.logits] if self.engine_name == "compiled" else []

    def freeze_rules(self) -> None:
        for p in self.rule_parameters():
            p.requires_grad_(False)

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
        from neural.registry import _atomic_write_bytes

        _atomic_write_bytes(Path(path), json.dumps(self.rules_state(), indent=2).encode())

    def load_rules(self, path: str | Path) -> None:
        state = json.loads(Path(path).read_text())
        if state.get("program") != self.program.name:
            raise UserError(f"{path}: rules of program {state.get('program')!r}, not {self.program.name!r}")
        self.set_rule_probabilities(state["probabilities"])
