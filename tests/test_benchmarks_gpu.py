"""`python -m benchmarks.gpu` on a machine without a GPU: it says so, runs nothing and writes
nothing (the GPU runs themselves need a lent GPU machine)."""

import shutil

import pytest


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_the_gpu_script_says_no_gpu_and_writes_nothing(tmp_path, capsys):
    from benchmarks.gpu import NO_GPU, main

    assert main(["--out", str(tmp_path / "results"), "--size", "quick"]) == 0
    assert NO_GPU in capsys.readouterr().out
    assert not (tmp_path / "results").exists()
