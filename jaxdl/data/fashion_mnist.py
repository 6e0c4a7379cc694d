"""Fashion-MNIST from its four IDX files (from --data-dir, else the cache, else downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdl.data.download import default_cache_dir, download
from jaxdl.data.idx import read_idx
from jaxdl.data.tabular import ClassificationData
from jaxdl.errors import JaxdlError

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # name -> md5, as published with the data set
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(data_dir: str | None) -> dict[str, Path]:
    """Paths of the four files. With `data_dir` they must be there (raw or .gz);
    otherwise the cache is used and missing files are downloaded with their checksum."""
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise JaxdlError(f"--data-dir {data_dir}: no such directory")
        found = {n: _find(folder, n) for n in FILES}
        missing = [n for n, p in found.items() if p is None]
        if missing:
            raise JaxdlError(f"--data-dir {data_dir}: missing {', '.join(missing)}")
        return found  # type: ignore[return-value]
    cache = default_cache_dir() / "fashion_mnist"
    return {n: _find(cache, n) or download(URL + n, cache / n, algorithm="md5", digest=md5)
            for n, md5 in FILES.items()}


def _images_labels(images_path: Path, labels_path: Path):
    X = read_idx(images_path)
    y = read_idx(labels_path)
    if X.ndim != 3 or X.dtype != np.uint8:
        raise JaxdlError(f"{images_path}: expected uint8 images of shape (N, rows, cols), got {X.dtype} {X.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise JaxdlError(f"{labels_path}: expected uint8 labels of shape (N,), got {y.dtype} {y.shape}")
    if len(X) == 0:
        raise JaxdlError(f"{images_path}: holds no images")
    if len(X) != len(y):
        raise JaxdlError(f"{images_path}: {len(X)} images but {labels_path.name} has {len(y)} labels")
    if y.size and y.max() >= len(LABELS):
        raise JaxdlError(f"{labels_path}: label {int(y.max())} out of range 0..{len(LABELS) - 1}")
    return X.reshape(len(X), -1).astype(np.float32) / 255.0, y.astype(np.int32), X.shape[1:]


def load_fashion_mnist(data_dir: str | None = None) -> ClassificationData:
    """Train 60,000 / test 10,000 images of 28x28, flattened to 784 floats in [0, 1]."""
    p = locate(data_dir)
    X_tr, y_tr, shape = _images_labels(p["train-images-idx3-ubyte.gz"], p["train-labels-idx1-ubyte.gz"])
    X_te, y_te, _ = _images_labels(p["t10k-images-idx3-ubyte.gz"], p["t10k-labels-idx1-ubyte.gz"])
    return ClassificationData(X_tr, y_tr, X_te, y_te, len(LABELS), (), tuple(shape))
