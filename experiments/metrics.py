"""Evaluation metrics for the joint-vs-frozen comparison.

Everything here is pure: plain inputs (tensors, arrays, lists, dicts) in, plain
Python numbers out, so results serialise straight into ``results.json``.

- :func:`classification_metrics` — accuracy, macro-F1, NLL and ECE of predicted
  emotion distributions;
- :func:`confusion` — the confusion matrix (rows = true class, columns =
  predicted class);
- :func:`source_table_error` — how far learned source-selection probabilities are
  from the synthetic generator's table; :func:`table_error` the same (max and
  mean absolute error) for any conditional table, e.g. a learned polarity table;
- :func:`posterior_agreement` / :func:`dec_factor_agreement` — whether the source
  the program trusted is the true source (synthetic) or the one FindingEmo's
  annotators said they based their decision on;
- :func:`mean_std` / :func:`aggregate_seeds` — means and standard deviations
  across seeds.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Number of equal-width confidence bins of the expected calibration error.
ECE_BINS = 15
#: Probabilities are clamped at this value before taking the log in the NLL.
NLL_EPS = 1e-12


# --------------------------------------------------------------------------- #
# Classification
# --------------------------------------------------------------------------- #
def _as_numpy(x: Any, dtype=None) -> np.ndarray:
    """A numpy copy of a tensor, array or nested list (detached, on the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_inputs(probs: Any, labels: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(probs [N, K] float64, labels [N] int64)``.

    Raises ``ValueError`` for wrong shapes, an empty batch, labels outside
    ``0..K-1``, or rows that are not probability distributions (a common bug is
    passing logits).
    """
    p = _as_numpy(probs, dtype=np.float64)
    y = _as_numpy(labels)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, K], got shape {p.shape}")
    n, k = p.shape
    if n_classes is not None and k != n_classes:
        raise ValueError(f"probs has {k} classes, expected n_classes={n_classes}")
    if y.shape != (n,):
        raise ValueError(f"labels must be [N]={n}, got shape {y.shape}")
    if n == 0:
        raise ValueError("no samples: cannot compute metrics on an empty set")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.equal(np.mod(y, 1), 0)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}, got range {y.min()}..{y.max()}")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise ValueError("probs must be finite and non-negative (pass probabilities, not logits)")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(f"each row of probs must sum to 1 (found a row summing to {worst:.6f})")
    return p, y


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins over the top-class confidence.

    Standard definition (Naeini et al. 2015; Guo et al. 2017): with confidence
    ``c_i = max_k p_ik`` and correctness ``a_i = [argmax_k p_ik == y_i]``, sample
    ``i`` falls in bin ``b`` when ``b/n_bins < c_i <= (b+1)/n_bins``, and

        ECE = sum_b |B_b| / N * | mean_{i in B_b} a_i - mean_{i in B_b} c_i |.
    """
    p, y = _check_inputs(probs, labels, None)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Number of inner edges strictly below c: bin b holds (edges[b], edges[b+1]].
    # A confidence of exactly 0 (impossible for a distribution) would land in bin 0.
    bins = np.searchsorted(edges[1:-1], conf, side="left")
    ece = 0.0
    n = len(conf)
    for b in range(n_bins):
        mask = bins == b
        m = int(mask.sum())
        if m:
            ece += m / n * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(probs: Any, labels: Any, n_classes: int = 7) -> dict[str, float | int]:
    """Accuracy, macro-F1, NLL and ECE of predicted distributions.

    Args:
        probs: ``[N, K]`` predicted class distributions (tensor, array or list);
            rows must sum to 1.
        labels: ``[N]`` true class indices in ``0..K-1``.
        n_classes: ``K``; checked against ``probs``.

    Returns:
        ``{"accuracy", "macro_f1", "nll", "ece", "n"}`` where ``macro_f1`` is
        sklearn's macro F1 over *all* ``K`` classes (a class never predicted nor
        present scores 0), ``nll`` is the mean ``-log max(p[label], 1e-12)``, and
        ``ece`` uses :data:`ECE_BINS` equal-width bins.
    """
    from sklearn.metrics import f1_score  # imported here: sklearn + scipy take ~1-3 s, a query never needs them

    p, y = _check_inputs(probs, labels, n_classes)
    pred = p.argmax(axis=1)
    p_true = np.clip(p[np.arange(len(y)), y], NLL_EPS, None)
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(
            f1_score(y, pred, average="macro", labels=list(range(n_classes)), zero_division=0)
        ),
        "nll": float(-np.log(p_true).mean()),
        "ece": expected_calibration_error(p, y),
        "n": int(len(y)),
    }


def confusion(probs: Any, labels: Any, n_classes: int = 7) -> np.ndarray:
    """``[K, K]`` confusion counts: row = true class, column = argmax prediction."""
    from sklearn.metrics import confusion_matrix

    p, y = _check_inputs(probs, labels, n_classes)
    return confusion_matrix(y, p.argmax(axis=1), labels=list(range(n_classes)))


# --------------------------------------------------------------------------- #
# Source selection
# --------------------------------------------------------------------------- #
def source_table_error(
    learned: Mapping[Any, Mapping[str, float]], truth: Mapping[Any, Mapping[str, float]]
) -> dict[str, Any]:
    """Mean absolute error of learned source probabilities against the truth.

    Both tables map a context to ``{source: probability}``. Every ``(context,
    source)`` entry of ``truth`` counts once; the overall ``mae`` is the mean over
    all those entries (so contexts with more sources weigh more), ``per_context``
    the mean within each context. Context keys are compared as strings, because
    JSON turns ``{1: ...}`` into ``{"1": ...}``.

    A source that a learned context does not mention has probability 0 (the
    program can never choose it). A context of ``truth`` missing from ``learned``
    raises ``ValueError``: that is a naming mismatch, not a probability.

    Returns:
        ``{"mae": float, "per_context": {context: float}}`` (context keys as in
        ``truth``).
    """
    learned_by_str = {str(k): v for k, v in learned.items()}
    missing = [str(c) for c in truth if str(c) not in learned_by_str]
    if missing:
        raise ValueError(
            f"learned source table lacks context(s) {missing}; it has {sorted(learned_by_str)}"
        )
    per_context: dict[Any, float] = {}
    all_errors: list[float] = []
    for ctx, true_row in truth.items():
        learned_row = learned_by_str[str(ctx)]
        errors = [abs(float(learned_row.get(src, 0.0)) - float(p)) for src, p in true_row.items()]
        if errors:
            per_context[ctx] = float(np.mean(errors))
            all_errors.extend(errors)
    if not all_errors:
        raise ValueError("the truth table has no (context, source) entries")
    return {"mae": float(np.mean(all_errors)), "per_context": per_context}


def table_error(
    learned: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """How far a learned conditional table (e.g. the polarity table P(sentiment | emotion))
    is from a reference one: ``{"max_abs", "mean_abs"}`` over every cell of the reference.

    A row of ``reference`` missing from ``learned`` raises ``ValueError`` (a naming
    mismatch); a cell missing from a learned row counts as probability 0.
    """
    missing = [r for r in reference if r not in learned]
    if missing:
        raise ValueError(f"learned table lacks row(s) {missing}; it has {sorted(learned)}")
    errors = [abs(float(learned[r].get(c, 0.0)) - float(p)) for r, row in reference.items() for c, p in row.items()]
    if not errors:
        raise ValueError("the reference table has no cells")
    return {"max_abs": float(max(errors)), "mean_abs": float(np.mean(errors))}


def posterior_agreement(posterior_argmax_sources: Sequence[str], true_sources: Sequence[str]) -> float:
    """Fraction of samples whose most probable source (posterior) is the true one."""
    if len(posterior_argmax_sources) != len(true_sources):
        raise ValueError(
            f"{len(posterior_argmax_sources)} posterior sources vs {len(true_sources)} true sources"
        )
    if not true_sources:
        raise ValueError("no samples: cannot compute posterior agreement")
    same = sum(a == b for a, b in zip(posterior_argmax_sources, true_sources))
    return same / len(true_sources)


#: How a FindingEmo ``dec_factors`` entry maps to a source kind. The field lists
#: what the annotator based their decision on; in ``findingemo-light`` it is a
#: comma-separated subset of ``FacialExpression, BodyLanguage, Context, Staging,
#: ConflictCtxtPerson, Neutral, Undefined``. Tokens are lower-cased with
#: everything but letters removed, then matched exactly here first, then by the
#: keyword substrings below.
#:
#: - "face": the facial expression decided — matches any face slot.
#: - "scene": context / staging (how the photo is composed) — the whole image.
#: - None: uninformative for face-vs-scene. Body language is a person cue that
#:   our face crops do not contain and the scene network only sees indirectly, so
#:   it votes for neither; "ConflictCtxtPerson" says context and person disagree
#:   without saying which won; "Neutral"/"Undefined" carry no source.
DEC_FACTOR_KINDS: dict[str, str | None] = {
    "facialexpression": "face",
    "facialexpressions": "face",
    "face": "face",
    "faces": "face",
    "context": "scene",
    "staging": "scene",
    "scene": "scene",
    "background": "scene",
    "bodylanguage": None,
    "conflictctxtperson": None,
    "neutral": None,
    "undefined": None,
}
#: Fallback for free text: a token containing one of these substrings maps to the
#: kind (checked in this order; the exact table above wins).
DEC_FACTOR_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("facial", "face"),
    ("face", "face"),
    ("context", "scene"),
    ("scene", "scene"),
    ("staging", "scene"),
    ("background", "scene"),
    ("surrounding", "scene"),
    ("environment", "scene"),
    ("setting", "scene"),
)


def _tokens(dec_factors: str | Sequence[str]) -> list[str]:
    if isinstance(dec_factors, str):
        parts = re.split(r"[,;|/]", dec_factors)
    else:
        parts = [str(t) for t in dec_factors]
    return [re.sub(r"[^a-z]", "", t.lower()) for t in parts]


def dec_factor_kind(dec_factors: str | Sequence[str] | None) -> str | None:
    """``"face"``, ``"scene"`` or ``None`` for one sample's ``dec_factors``.

    Accepts the comma-separated string of ``findingemo-light`` or a list of
    tokens. Each token maps through :data:`DEC_FACTOR_KINDS` (then
    :data:`DEC_FACTOR_KEYWORDS`); unknown tokens are ignored. The sample maps to
    a kind only when its tokens name exactly one kind: ``"BodyLanguage,
    FacialExpression"`` -> ``"face"``, ``"Context,Staging"`` -> ``"scene"``, but
    ``"Context,FacialExpression"`` (both) or ``"Neutral"`` (neither) -> ``None``.
    """
    if dec_factors is None or (isinstance(dec_factors, float) and math.isnan(dec_factors)):
        return None
    kinds: set[str] = set()
    for tok in _tokens(dec_factors):
        if not tok:
            continue
        if tok in DEC_FACTOR_KINDS:
            kind = DEC_FACTOR_KINDS[tok]
        else:
            kind = next((k for word, k in DEC_FACTOR_KEYWORDS if word in tok), None)
        if kind is not None:
            kinds.add(kind)
    return kinds.pop() if len(kinds) == 1 else None


def source_kind(source: str) -> str:
    """``"face"`` for any face slot (``face1``, ``face2``...), else the source name."""
    return "face" if source.startswith("face") else source


def dec_factor_agreement(
    posterior: Sequence[Mapping[str, float]], dec_factors: Sequence[str | Sequence[str] | None]
) -> float | None:
    """Agreement of the trusted source with FindingEmo's ``dec_factors``.

    For every sample whose ``dec_factors`` map to a kind (:func:`dec_factor_kind`),
    the trusted source is the argmax of its posterior ``{source: p}``; any face
    slot counts as ``"face"``. Returns the fraction of those samples where the
    kinds match, or ``None`` when no sample is mappable.
    """
    if len(posterior) != len(dec_factors):
        raise ValueError(f"{len(posterior)} posteriors vs {len(dec_factors)} dec_factors")
    hits = total = 0
    for post, factors in zip(posterior, dec_factors):
        kind = dec_factor_kind(factors)
        if kind is None or not post:
            continue
        trusted = max(post.items(), key=lambda kv: kv[1])[0]
        total += 1
        hits += source_kind(trusted) == kind
    return hits / total if total else None


# --------------------------------------------------------------------------- #
# Across seeds
# --------------------------------------------------------------------------- #
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of one value is 0.0."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of no values")
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return mean, std


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def aggregate_seeds(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and std across seeds of every numeric leaf of (nested) dicts.

    ``[{"a": 1, "b": {"c": 2}}, {"a": 3, "b": {"c": 4}}]`` ->
    ``{"a": {"mean": 2.0, "std": 1.414..., "n": 2}, "b": {"c": {"mean": 3.0, ...}}}``.

    - a key may be absent or ``None`` in some seeds: it is aggregated over the
      seeds that have a number (``n`` says how many); a key with no number in
      any seed is left out;
    - non-numeric leaves (strings, lists such as training histories, booleans)
      are skipped;
    - a key that is a dict in one seed and a number in another raises
      ``ValueError``.
    """
    keys: list[str] = []
    for d in per_seed:
        for k in d:
            if k not in keys:
                keys.append(k)
    out: dict[str, Any] = {}
    for k in keys:
        values = [d[k] for d in per_seed if k in d and d[k] is not None]
        dicts = [v for v in values if isinstance(v, Mapping)]
        numbers = [v for v in values if _is_number(v)]
        if dicts and numbers:
            raise ValueError(f"key {k!r} is a dict in some seeds and a number in others")
        if dicts:
            sub = aggregate_seeds(dicts)
            if sub:
                out[k] = sub
        elif numbers:
            mean, std = mean_std(numbers)
            out[k] = {"mean": mean, "std": std, "n": len(numbers)}
    return out
