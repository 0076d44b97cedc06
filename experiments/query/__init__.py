"""``emologic query`` as a library: answer new images with a trained run or the untrained program.

- :mod:`~experiments.query.program`: :class:`TrainedProgram` (a run's or the prior's parameters) and ``open_program``;
- :mod:`~experiments.query.answer`: how a chunk of images is answered and explained;
- :mod:`~experiments.query.results`: what comes back per input, and how inputs are expanded;
- :mod:`~experiments.query.checkpoints`: which checkpoint of a run directory answers;
- :mod:`~experiments.query.annotate`: the annotated picture of an answer;
- :mod:`~experiments.query.bench`: ``emologic bench query`` (time to first answer, images per second).
"""
