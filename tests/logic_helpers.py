"""Shared builders for the logic tests (they live in the library: logic/inputs.py)."""
from logic.inputs import (  # noqa: F401
    ALL_LAYOUTS,
    face_boxes,
    given_networks,
    make_batch,
    random_outputs,
    random_rule_probs,
)
