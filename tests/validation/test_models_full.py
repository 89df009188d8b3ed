"""Full-size models (reference configs): shapes and parameter counts, no training."""

from __future__ import annotations

import itertools

import pytest

from validation.config import workload_config

torch = pytest.importorskip("torch")


def cosmoflow_reference_params() -> int:
    """Parameter count implied by the layer list in REFERENCE.md (MLPerf HPC CosmoFlow)."""
    total, cin = 0, 4
    for cout in (32, 64, 128, 256, 512):  # Conv3D k=3: weights + bias
        total += cin * cout * 27 + cout
        cin = cout
    width = 512 * 4**3  # 128 -> 4 after five 2x pools: Flatten(32768)
    for units in (128, 64, 4):
        total += width * units + units
        width = units
    return total


def test_reference_count_matches_the_flatten_size_in_the_spec() -> None:
    assert 512 * 4**3 == 32768
    assert cosmoflow_reference_params() == 8_907_556


def test_full_cosmoflow_torch_shapes_and_count() -> None:
    from validation.models.torch_cosmoflow import CosmoFlowNet

    model = CosmoFlowNet(workload_config("cosmoflow", "full")).to("meta")
    assert sum(p.numel() for p in model.parameters()) == cosmoflow_reference_params()
    out = model(torch.empty(2, 4, 128, 128, 128, device="meta"))
    assert tuple(out.shape) == (2, 4)


def test_full_deeplab_torch_output_is_full_resolution() -> None:
    from validation.models.torch_deeplab import DeepLabV3Plus

    config = workload_config("climate", "full")
    assert config.aspp_dilations == (6, 12, 18)
    with torch.device("meta"):
        model = DeepLabV3Plus(config)
        out = model(torch.empty(1, 16, 768, 1152))
    assert tuple(out.shape) == (1, 3, 768, 1152)
    params = sum(p.numel() for p in model.parameters())
    # DeepLabv3+ with an Xception encoder is tens of millions of parameters (41M for
    # Xception-65 at 21 classes); our Xception-style encoder has 8 middle blocks.
    assert 20e6 < params < 60e6
    dilations = [
        m.dilation[0]
        for m in model.aspp.branches.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert dilations == [6, 12, 18]


def dcgan_reference_params(
    z: int, filters: tuple[int, ...], size: int, k: int = 5
) -> tuple[int, int]:
    """Generator/discriminator counts from the CosmoGAN layer list (BN: 2 per channel)."""
    base = size // 16
    gen = z * base * base * filters[0] + base * base * filters[0] + 2 * filters[0]
    chans = [*filters, 1]
    for i, (cin, cout) in enumerate(itertools.pairwise(chans)):
        gen += cin * cout * k * k + cout + (2 * cout if i < len(filters) - 1 else 0)
    disc, cin = 0, 1
    for i, cout in enumerate(filters[::-1]):
        disc += cin * cout * k * k + cout + (2 * cout if i > 0 else 0)
        cin = cout
    disc += cin * base * base + 1
    return gen, disc


def test_full_dcgan_torch_shapes_and_counts() -> None:
    from validation.models.torch_dcgan import Discriminator, Generator

    config = workload_config("gan", "full")
    gen, disc = Generator(config).to("meta"), Discriminator(config).to("meta")
    image = gen(torch.empty(2, config.latent_dim, device="meta"))
    assert tuple(image.shape) == (2, 1, 256, 256)
    assert tuple(disc(image).shape) == (2, 1)
    expected = dcgan_reference_params(config.latent_dim, config.gen_filters, 256)
    assert (
        sum(p.numel() for p in gen.parameters()),
        sum(p.numel() for p in disc.parameters()),
    ) == expected


def test_full_models_in_keras_match_shapes_and_cosmoflow_count() -> None:
    pytest.importorskip("tensorflow")
    from validation.models.tf_cosmoflow import build_cosmoflow
    from validation.models.tf_dcgan import build_discriminator, build_generator
    from validation.models.tf_deeplab import build_deeplab

    cosmo = build_cosmoflow(workload_config("cosmoflow", "full"))
    assert cosmo.count_params() == cosmoflow_reference_params()
    assert cosmo.output_shape == (None, 4)
    assert build_deeplab(workload_config("climate", "full")).output_shape == (None, 768, 1152, 3)
    config = workload_config("gan", "full")
    assert build_generator(config).output_shape == (None, 256, 256, 1)
    assert build_discriminator(config).output_shape == (None, 1)
