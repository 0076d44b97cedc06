"""Compiled programs are kept on disk (logic/engines/compile_cache.py): a second
process loads instead of compiling, a changed program compiles again, and a
corrupt entry is rebuilt."""
from __future__ import annotations

import pickle

import pytest
import torch

import logic.engines.compiled as compiled
from logic.engines import compile_cache
from logic.engines.compiled import CompiledFamilies, compile_families
from logic.model import LogicModel
from logic.program import PROGRAM_DIR, load_program
from neural.common import EMOTIONS
from pipelines.context import CONTEXTS
from tests.logic_helpers import ALL_LAYOUTS, given_networks, make_batch, random_outputs


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory, and no compiled program left in this process."""
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path))
    monkeypatch.setattr(compiled, "_COMPILED", {})
    return tmp_path / compile_cache.SUBDIR


@pytest.fixture
def compiles(monkeypatch):
    """Counts the real compilations of the compiled engine."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].text)
        return compile_families(*args, **kwargs)

    monkeypatch.setattr(compiled, "compile_families", counting)
    return calls


def answers(model) -> torch.Tensor:
    program = model.program
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model(make_batch(ALL_LAYOUTS, random_outputs(program, len(ALL_LAYOUTS), g)), explain=True).posterior


def fresh_model(program):
    compiled._COMPILED.clear()  # as in a new process: only the disk is left
    return LogicModel(program, given_networks(program))


def test_second_process_loads_the_compiled_program_from_disk(cache, compiles):
    program = load_program("context_selection", check_bindings=False)
    first = answers(fresh_model(program))
    entries = list(cache.glob("context_selection-*.pkl"))
    assert len(compiles) == 1 and len(entries) == 1
    second = answers(fresh_model(program))
    assert len(compiles) == 1  # loaded, not compiled
    assert torch.equal(first, second)
    stored = pickle.loads(entries[0].read_bytes())
    assert isinstance(stored["compiled"], CompiledFamilies) and stored["key"][:24] in entries[0].name


def test_a_changed_program_compiles_again(cache, compiles, tmp_path):
    program = load_program("context_selection", check_bindings=False)
    fresh_model(program)
    changed = tmp_path / "context_selection.pl"  # same name, one more comment line
    changed.write_text((PROGRAM_DIR / "context_selection.pl").read_text() + "\n% changed\n")
    fresh_model(load_program(changed, check_bindings=False))
    assert len(compiles) == 2 and len(list(cache.glob("context_selection-*.pkl"))) == 2
    fresh_model(load_program(changed, check_bindings=False))
    assert len(compiles) == 2


def test_other_compile_options_or_compiler_get_their_own_entry(cache):
    program = load_program("context_selection", check_bindings=False)
    domains = {n.network: n.domain for n in program.neural}
    key = compile_cache.cache_key(program.text, (CONTEXTS, EMOTIONS, domains))
    assert key != compile_cache.cache_key(program.text, (CONTEXTS[:3], EMOTIONS, domains))
    compile_cache.compiler_fingerprint.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(compile_cache, "COMPILER_LIBRARIES", ("problog", "pysdd", "klaycircuits", "numpy"))
            assert compile_cache.cache_key(program.text, (CONTEXTS, EMOTIONS, domains)) != key
    finally:
        compile_cache.compiler_fingerprint.cache_clear()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_object"])
def test_a_corrupt_entry_is_rebuilt(cache, compiles, damage):
    program = load_program("context_selection", check_bindings=False)
    expected = answers(fresh_model(program))
    (entry,) = cache.glob("context_selection-*.pkl")
    data = entry.read_bytes()
    entry.write_bytes({"garbage": b"not a pickle at all",
                       "truncated": data[: len(data) // 2],
                       "other_object": pickle.dumps({"key": "another key", "compiled": 42})}[damage])
    assert torch.equal(answers(fresh_model(program)), expected)
    assert len(compiles) == 2
    stored = pickle.loads(entry.read_bytes())  # rewritten, usable again
    assert isinstance(stored["compiled"], CompiledFamilies)
    fresh_model(program)
    assert len(compiles) == 2


def test_an_unwritable_cache_costs_speed_not_answers(tmp_path, monkeypatch, compiles):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("EMOLOGIC_CACHE", str(blocker))
    monkeypatch.setattr(compiled, "_COMPILED", {})
    program = load_program("context_selection", check_bindings=False)
    assert not torch.isnan(answers(fresh_model(program))).any()
    assert len(compiles) == 1


@pytest.mark.parametrize("program", ["context_selection", "clip_sentiment"])
def test_an_entry_written_by_another_process_answers_in_this_one(tmp_path, program):
    """Python salts string hashes per process, and ProbLog terms cache their
    hash: an entry must not carry hashes from the process that wrote it
    (the compiled roots are a dict keyed by terms)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; from logic.program import load_program; from tests.logic_helpers import given_networks\n"
        "p = load_program(sys.argv[1], check_bindings=False)\n"
        "from logic.model import LogicModel; LogicModel(p, given_networks(p))  # image and clip alike\n"
    )
    env = {**os.environ, "EMOLOGIC_CACHE": str(tmp_path)}
    for seed in ("1", "2"):  # the second process loads what the first wrote, under another string-hash salt
        proc = subprocess.run([sys.executable, "-c", script, program], env={**env, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / compile_cache.SUBDIR).glob(f"{program}-*.pkl"))) == 1
