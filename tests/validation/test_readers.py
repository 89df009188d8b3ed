"""Real-format readers on small files written here: TFRecord (plain and GZIP), HDF5, npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from validation.config import workload_config
from validation.data.readers import read_split
from validation.data.tfrecord import (
    crc32c,
    encode_example,
    parse_example,
    read_records,
    write_records,
)
from validation.spec import VAL_OFFSET


def test_crc32c_known_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def cosmo_file(path: Path, size: int, seed: int) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=(size, size, size, 4)).astype("<i2")
    y = [0.1 * seed, -0.2, 0.3, 0.4]
    write_records(path, [encode_example({"x": counts.tobytes(), "y": y})])
    return counts, y


@pytest.mark.parametrize("suffix", [".tfrecord", ".tfrecord.gz"])
def test_cosmoflow_tfrecords_are_read_and_normalised(tmp_path: Path, suffix: str) -> None:
    (tmp_path / "train").mkdir()
    counts, y = cosmo_file(tmp_path / "train" / f"a{suffix}", 8, 1)
    x, t = read_split(
        workload_config("cosmoflow", "small", size=8), tmp_path, "train", np.array([0])
    )
    assert x.shape == (1, 4, 8, 8, 8)
    assert np.allclose(x[0, 2], np.log1p(counts[..., 2]))
    assert np.allclose(t[0], y)


def test_corrupt_tfrecord_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.tfrecord"
    write_records(path, [b"hello"])
    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        list(read_records(path))


def test_our_tfrecords_read_back_with_tensorflow(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    counts, y = cosmo_file(tmp_path / "a.tfrecord.gz", 4, 2)
    raw = next(iter(tf.data.TFRecordDataset(str(tmp_path / "a.tfrecord.gz"), "GZIP")))
    parsed = tf.io.parse_single_example(
        raw,
        {"x": tf.io.FixedLenFeature([], tf.string), "y": tf.io.FixedLenFeature([4], tf.float32)},
    )
    assert np.allclose(parsed["y"].numpy(), y)
    assert tf.io.decode_raw(parsed["x"], tf.int16).numpy().tolist() == counts.ravel().tolist()
    assert parse_example(raw.numpy())["y"] == pytest.approx(y)


def test_deepcam_hdf5_is_read(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    (tmp_path / "validation").mkdir()
    data = np.random.default_rng(0).normal(size=(8, 12, 4)).astype(np.float32)
    labels = np.zeros((8, 12), dtype=np.int32)
    labels[2:4, 3:5] = 1
    with h5py.File(tmp_path / "validation" / "s0.h5", "w") as f:
        f["climate/data"] = data
        f["climate/labels_0"] = labels
    config = workload_config("climate", "small", height=8, width=12)
    x, y = read_split(config, tmp_path, "val", np.array([VAL_OFFSET]))
    assert x.shape == (1, 4, 8, 12) and x.min() == 0.0 and x.max() == 1.0
    assert np.array_equal(y[0], labels)


def test_numpy_maps_are_squashed_and_ref_reads_from_the_other_end(tmp_path: Path) -> None:
    maps = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
    np.save(tmp_path / "validation.npy", maps)
    config = workload_config("gan", "small", image_size=4)
    val, _ = read_split(config, tmp_path, "val", np.array([VAL_OFFSET]))
    ref, _ = read_split(config, tmp_path, "ref", np.array([2 * VAL_OFFSET]))
    assert val.shape == (1, 1, 4, 4) and val.min() >= -1 and val.max() < 1
    assert np.allclose(ref[0, 0], 2 * maps[2] / (maps[2] + 1) - 1)


def test_missing_files_say_where_they_were_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train"):
        read_split(workload_config("cosmoflow", "small"), tmp_path, "train", np.array([0]))


@pytest.mark.training
def test_training_reads_tfrecords_given_with_data(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from validation.spec import RunSpec
    from validation.train_torch import train

    for split, n in (("train", 8), ("validation", 4)):
        (tmp_path / split).mkdir()
        for i in range(n):
            cosmo_file(tmp_path / split / f"s{i}.tfrecord", 16, i)
    spec = RunSpec(
        suite="cosmoflow",
        framework="pytorch",
        out_dir=tmp_path / "out",
        data_dir=tmp_path,
        threads=1,
        overrides={"train_samples": 8, "val_samples": 4, "global_batch": 4, "epochs": 1},
    )
    result = train(spec)
    assert result["steps"] == 2 and result["shard"]["n"] == 8
    assert np.isfinite(result["metrics"]["val_mae"])
