"""Import every module that registers a network, so the registry knows them all.

Heavy optional dependencies (transformers) are imported lazily inside the
networks that need them, so importing this module stays cheap.
"""
from neural import face, late_fusion, multimodal, scene, temporal_va, va  # noqa: F401
