"""Parsers for what the stack reports: horovodrun --check-build, ONEDNN_VERBOSE."""

from __future__ import annotations

import importlib.util

import pytest

from validation.stack import parse_check_build, parse_onednn_verbose, probe_stack

CHECK_BUILD = """Horovod v0.28.1:

Available Frameworks:
    [X] TensorFlow
    [X] PyTorch
    [ ] MXNet

Available Controllers:
    [ ] MPI
    [X] Gloo

Available Tensor Operations:
    [ ] NCCL
    [ ] DDL
    [X] Gloo
"""


def test_check_build_is_parsed_into_sections() -> None:
    built = parse_check_build(CHECK_BUILD)
    assert built["frameworks"] == {"TensorFlow": True, "PyTorch": True, "MXNet": False}
    assert built["controllers"] == {"MPI": False, "Gloo": True}
    assert built["tensor operations"]["NCCL"] is False


def test_onednn_verbose_counts_executed_primitives() -> None:
    text = (
        "onednn_verbose,v1,info,cpu,isa:Intel AVX2\n"
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,x,y\n"
        "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef\n"
    )
    assert parse_onednn_verbose(text) == {"convolution": 1, "gemm_api": 1}


def test_pytorch_probe_reports_backends() -> None:
    pytest.importorskip("torch")
    info = probe_stack("pytorch")
    assert info["pytorch"]["gloo_available"] is True
    assert info["horovod"]["available"] == (importlib.util.find_spec("horovod") is not None)
