import gzip

import jax
import numpy as np
import pytest

from jaxdl.data import fashion_mnist, idx, synthetic, tabular
from jaxdl.errors import JaxdlError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4) % 100).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    idx.write_idx(path, a, compress=compress)
    b = idx.read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_known_bytes():
    # 2x2 uint8 matrix written by hand: magic 0x00000803? no: 0x0000 08 02, dims 2, 2
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4])
    np.testing.assert_array_equal(idx.parse_idx(raw), [[1, 2], [3, 4]])


@pytest.mark.parametrize("raw,msg", [
    (b"", "too short"),
    (b"\x00\x00\x08", "too short"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
])
def test_idx_errors(raw, msg):
    with pytest.raises(JaxdlError, match=msg):
        idx.parse_idx(raw, "f")


def test_idx_truncated_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")[:-6])
    with pytest.raises(JaxdlError, match="gzip"):
        idx.read_idx(p)
    with pytest.raises(JaxdlError, match="no such file"):
        idx.read_idx(tmp_path / "missing")


def _write_fashion(folder, n_train=12, n_test=5, label_dtype=np.uint8):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        idx.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                      compress=True)
        idx.write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(label_dtype))


def test_fashion_mnist_reader(tmp_path):
    _write_fashion(tmp_path)
    d = fashion_mnist.load_fashion_mnist(str(tmp_path))
    assert d.X_train.shape == (12, 784) and d.X_test.shape == (5, 784)
    assert d.X_train.dtype == np.float32 and 0 <= d.X_train.min() and d.X_train.max() <= 1
    assert d.num_classes == 10 and d.image_shape == (28, 28)


def test_fashion_mnist_bad_inputs(tmp_path):
    with pytest.raises(JaxdlError, match="no such directory"):
        fashion_mnist.load_fashion_mnist(str(tmp_path / "nope"))
    with pytest.raises(JaxdlError, match="missing"):
        fashion_mnist.load_fashion_mnist(str(tmp_path))
    _write_fashion(tmp_path, label_dtype=np.int32)
    with pytest.raises(JaxdlError, match="expected uint8 labels"):
        fashion_mnist.load_fashion_mnist(str(tmp_path))
    _write_fashion(tmp_path)
    idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(JaxdlError, match="5 images but"):
        fashion_mnist.load_fashion_mnist(str(tmp_path))


def test_digits_split_reproducible_and_disjoint():
    a, b = tabular.load_digits(split_seed=0), tabular.load_digits(split_seed=0)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert len(a.y_train) + len(a.y_test) == 1797 and len(a.y_test) == 359
    assert a.X_train.max() <= 1.0 and a.num_features == 64
    c = tabular.load_digits(split_seed=1)
    assert not np.array_equal(a.y_test, c.y_test)


def test_breast_cancer_standardised_on_train():
    d = tabular.load_breast_cancer()
    assert d.num_features == 30 and len(d.feature_names) == 30 and d.num_classes == 2
    np.testing.assert_allclose(d.X_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.X_train.std(0), 1, atol=1e-4)


def test_linreg_data_has_the_known_truth():
    X, y = synthetic.linreg_data(jax.random.key(0), 5000, noise=0.01)
    A = np.c_[np.asarray(X), np.ones(len(X))]
    theta = np.linalg.lstsq(A, np.asarray(y), rcond=None)[0]
    np.testing.assert_allclose(theta, [2.0, -3.4, 4.2], atol=1e-3)
    resid = np.asarray(y) - A @ np.array([2.0, -3.4, 4.2])
    assert abs(resid.std() - 0.01) < 1e-3


def test_digits_read_from_the_shipped_file_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits as sklearn_digits

    from jaxdl.data.tabular import shipped_digits

    table, reference = shipped_digits(), sklearn_digits()
    np.testing.assert_array_equal(table[:, :-1], reference.data)
    np.testing.assert_array_equal(table[:, -1], reference.target)
