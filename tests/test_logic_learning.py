"""Logic-only training recovers the source probabilities that generated the labels."""
from __future__ import annotations

import pytest
import torch

from logic.learning import train_rules
from logic.model import LogicModel
from logic.program import load_program
from neural.common import EMOTIONS
from tests.logic_helpers import ALL_LAYOUTS, given_networks, make_batch

TRUE = {"scene": 0.1, "face1": 0.2, "face2": 0.3, "face3": 0.4}
SOURCES = list(TRUE)


# DeepProbLog builds its parameter tensors with the default dtype: run in float64.
pytestmark = pytest.mark.usefixtures("float64")


def network_outputs(noisy: bool) -> dict[str, torch.Tensor]:
    """One output per source: exact = one-hot on the source's own emotion; noisy =
    0.7 on it and 0.1 on three others (overlapping with the other sources')."""
    out = {}
    for k, s in enumerate(SOURCES):
        q = torch.zeros(len(EMOTIONS))
        if noisy:
            q[k] = 0.7
            for j in (k + 1, k + 2, k + 3):
                q[j % len(EMOTIONS)] += 0.1
        else:
            q[k] = 1.0
        out[s] = q
    return out


@pytest.mark.parametrize("engine", ["compiled", "deepproblog"])
@pytest.mark.parametrize("noisy", [False, True], ids=["exact", "noisy"])
def test_seed_program_recovers_source_probabilities(engine, noisy):
    """All images have three faces and the same network outputs; label counts are
    exactly N * sum_s pi_s q_s(e), so the maximum-likelihood estimate is pi itself.
    One sample per emotion, weighted by its count, is the same likelihood."""
    program = load_program("source_selection", check_bindings=False)
    q = network_outputs(noisy)
    counts = torch.stack([TRUE[s] * q[s] for s in SOURCES]).sum(0) * 100  # [E]
    assert torch.allclose(counts, counts.round())
    layout = [(3, True)] * len(EMOTIONS)
    batch = make_batch(layout, {s: q[s].expand(len(EMOTIONS), -1) for s in SOURCES},
                       labels=torch.arange(len(EMOTIONS)))
    model = LogicModel(program, given_networks(program), engine=engine)
    model.reset_rules("uniform")
    if engine == "compiled":
        train_rules(model, [batch], epochs=300, lr=0.05, class_weights=counts)
    else:  # DeepProbLog's SGD on the probabilities themselves
        train_rules(model, [batch], epochs=150, lr=0.05, class_weights=counts)
    learned = model.source_probabilities_for("n3_large")
    mae = sum(abs(learned[s] - TRUE[s]) for s in SOURCES) / len(SOURCES)
    assert mae <= 0.03, (learned, mae)


TABLE = {
    "n1_small": {"scene": 0.7, "face1": 0.3},
    "n1_large": {"scene": 0.2, "face1": 0.8},
    "n2_small": {"scene": 0.5, "face1": 0.3, "face2": 0.2},
    "n2_large": {"scene": 0.15, "face1": 0.65, "face2": 0.2},
    "n3_small": {"scene": 0.4, "face1": 0.3, "face2": 0.2, "face3": 0.1},
    "n3_large": {"scene": 0.1, "face1": 0.6, "face2": 0.2, "face3": 0.1},
}


@pytest.mark.parametrize("noisy", [False, True], ids=["exact", "noisy"])
def test_context_program_recovers_context_table(noisy):
    """Random images in every context; each source's network output is exact
    (one-hot on its emotion) or noisy (a random distribution the emotion is
    drawn from); the label comes from a source drawn from the context's row."""
    program = load_program("context_selection", check_bindings=False)
    g = torch.Generator().manual_seed(11)
    n_per = 1200
    layout = [lay for lay in ALL_LAYOUTS[1:] for _ in range(n_per)]
    n = len(layout)
    outputs, emotions = {}, {}
    for s in SOURCES:
        if noisy:
            probs = torch.distributions.Dirichlet(torch.full((len(EMOTIONS),), 0.5)).sample((n,))
            e = torch.multinomial(probs, 1, generator=g).squeeze(1)
        else:
            e = torch.randint(0, len(EMOTIONS), (n,), generator=g)
            probs = torch.nn.functional.one_hot(e, len(EMOTIONS)).double()
        outputs[s], emotions[s] = probs, e
    batch = make_batch(layout, outputs)
    contexts = batch.contexts()
    labels = []
    for i, c in enumerate(contexts):
        row = TABLE[c]
        pick = torch.multinomial(torch.tensor(list(row.values())), 1, generator=g).item()
        labels.append(int(emotions[list(row)[pick]][i]))
    batch.labels = torch.tensor(labels)
    model = LogicModel(program, given_networks(program), engine="compiled")
    model.reset_rules("uniform")
    train_rules(model, [batch], epochs=120, lr=0.1)
    learned = model.source_probabilities()
    errors = [abs(learned[c][s] - p) for c, row in TABLE.items() for s, p in row.items()]
    assert sum(errors) / len(errors) <= 0.03, learned
