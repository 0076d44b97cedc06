"""Denormals are flushed to zero in a training process, in torch's worker threads too."""
import subprocess
import sys
import textwrap


def test_flush_denormals_reaches_torch_threads():
    # a fresh process: the setting must come before torch starts its thread pool
    code = textwrap.dedent("""
        import torch
        from neural.compute import denormals_flushed, flush_denormals
        assert not denormals_flushed()
        assert flush_denormals() and denormals_flushed()
        torch.set_num_threads(2)
        x = torch.full((1 << 20,), 1e-39)  # denormal float32, large enough to run in parallel
        assert float(x.sum()) == 0.0, float(x.sum())  # read as zero (DAZ), in every thread
        assert float((torch.ones(4) * 1e-30 * 1e-10).abs().max()) == 0.0  # results flushed (FTZ)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_without_flush_denormals_survive():
    # the control: the same sums are not zero when nothing is flushed
    code = "import torch; x = torch.full((1 << 20,), 1e-39); assert float(x.sum()) > 0"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
