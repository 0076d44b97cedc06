"""Reports of a run: ``report.md``, the console summary and the plots, all read from ``results.json``.

Imports run one way: these modules read the results dict and never the harness that wrote it
(only the leaf :mod:`experiments.metrics` for mean and std).
"""
