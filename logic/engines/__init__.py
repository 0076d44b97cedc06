"""The engines behind :class:`logic.model.LogicModel`, registered by name
(:mod:`logic.engines.base`): ``compiled`` and ``deepproblog``."""
from logic.engines import compiled, deepproblog_engine  # noqa: F401 - registers them
from logic.engines.base import ENGINES, Engine, batched_engines, engine_class, make_engine, register_engine  # noqa: F401
