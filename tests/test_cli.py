"""`emologic --help` lists every command; every command's --help ends with an example;
the main script's --help works; `emologic rules` reads a finished run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import _COMMANDS, build_parser, main
from problog.program import PrologString

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    build_parser()
    for name in ("query", "rules", "bench", "cache", "train-face", "export-onnx", "explain-face", "va-temporal"):
        assert name in _COMMANDS, name
        assert name in out, name


@pytest.mark.parametrize("name", sorted(["query", "rules", "bench", "cache", "train-face", "export-onnx",
                                         "explain-face", "va-temporal"]))
def test_every_command_help_ends_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    lines = [line.strip() for line in capsys.readouterr().out.strip().splitlines() if line.strip()]
    start = lines.index("Example:")  # the help ends with the example(s)
    assert start < len(lines) - 1
    assert all(line.startswith("emologic " + name) for line in lines[start + 1:])


def test_main_script_help():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "joint_vs_frozen.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    assert "--engine" in out.stdout and "--resume" in out.stdout and "Example:" in out.stdout


def test_main_script_bad_option_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "joint_vs_frozen.py"), "--dataset", "findingemo",
                          "--runs-dir", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "needs --images DIR" in out.stderr


def test_rules_command_on_a_finished_run(tmp_path, capsys):
    from experiments.harness.config import HarnessConfig
    from experiments.harness import run

    run_dir = run(HarnessConfig(n_images=40, seeds=[0], epochs=1, stage0_epochs=1, head_epochs=1,
                                regimes=["frozen", "joint"], progress=False, runs_dir=str(tmp_path / "runs"),
                                cache=str(tmp_path / "cache"), data_root=str(tmp_path / "data")), argv=[])
    capsys.readouterr()
    assert main(["rules", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "== frozen" in out and "== joint" in out and "trust(n1_large)" in out and "truth" in out
    # where each source's knowledge came from, per regime: joint fine-tuned the face net, frozen did not
    frozen, joint = out.split("== joint")
    assert "scene: NO PRETRAINED KNOWLEDGE (scene backbone: random init (seed 0)" in frozen
    assert "face1, face2, face3: face_emotion: FER2013 mini-XCEPTION" in frozen
    assert "fine-tuned in stage 0 on synthetic" in frozen and "fine-tuned in joint" not in frozen
    assert "fine-tuned in stage 0 on synthetic; fine-tuned in joint on synthetic" in joint
    assert main(["rules", str(run_dir), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["joint"]["provenance"]
    assert record["face1"]["pretrained"] and not record["scene"]["pretrained"]
    assert record["face1"]["parts"]["face_emotion"]["origin"] == "fer2013"
    assert main(["rules", str(run_dir), "--pl"]) == 0
    text = capsys.readouterr().out
    assert "%   face1, face2, face3: face_emotion: FER2013" in text
    assert len(list(PrologString(text))) > 10  # ProbLog parses the learned program
    assert "NO PRETRAINED KNOWLEDGE" in (run_dir / "report.md").read_text()
    assert main(["rules", str(run_dir), "--regime", "late_fusion"]) == 2
    assert "no rules for regime 'late_fusion'" in capsys.readouterr().err


def test_output_piped_into_a_closed_reader_ends_quietly():
    """``emologic rules RUN | head``: no BrokenPipeError traceback, exit status 0."""
    import subprocess
    import sys

    script = (
        "import argparse, sys\n"
        "from experiments import cli\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('command', nargs='?', default='flood')\n"
        "def flood(args):\n"
        "    for _ in range(200000): print('a line of a long table')\n"
        "p.set_defaults(_run=flood)\n"
        "cli.build_parser = lambda: p\n"
        "sys.exit(cli.main([]))\n"
    )
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -c \"$0\" | head -1", script],
                          capture_output=True, text=True)
    assert proc.stdout == "a line of a long table\n"
    assert proc.returncode == 0 and "Error" not in proc.stderr, proc.stderr
