"""Classification data sets by config name."""
from __future__ import annotations

import csv
import io

import numpy as np

from jaxdl.data.bounded import read_file
from jaxdl.data.fashion_mnist import load_fashion_mnist
from jaxdl.data.tabular import ClassificationData, load_breast_cancer, load_digits, split_indices
from jaxdl.errors import JaxdlError

DATASETS = ("digits", "breast_cancer", "fashion_mnist")


def load_csv(path, *, target: str = "", test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """A classification table from a CSV file: a header row, numeric feature columns and a
    label column (`target`, default the last; its distinct values, sorted, become classes
    0..C-1). Features are standardised with the training split's mean and deviation."""
    text = read_file(path).decode("utf-8-sig", errors="strict")
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if len(rows) < 3:
        raise JaxdlError(f"{path}: needs a header row and at least two data rows")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    column = header.index(target) if target in header else len(header) - 1 if not target else None
    if column is None:
        raise JaxdlError(f"{path}: no column {target!r} (columns: {', '.join(header)})")
    X = np.zeros((len(body), len(header) - 1), np.float64)
    labels = []
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise JaxdlError(f"{path}:{i}: {len(row)} fields, the header has {len(header)}")
        labels.append(row[column].strip())
        features = [cell for j, cell in enumerate(row) if j != column]
        try:
            X[i - 2] = [float(cell) for cell in features]
        except ValueError:
            raise JaxdlError(f"{path}:{i}: a feature that is not a number") from None
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise JaxdlError(f"{path}: the label column {header[column]!r} holds one class only")
    if not np.isfinite(X).all():
        raise JaxdlError(f"{path}: holds NaN or infinite features")
    y = np.asarray([classes.index(v) for v in labels], np.int32)
    tr, te = split_indices(len(y), test_fraction, split_seed)
    mu, sd = X[tr].mean(0), X[tr].std(0)
    X = ((X - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    names = tuple(h for j, h in enumerate(header) if j != column)
    return ClassificationData(X[tr], y[tr], X[te], y[te], len(classes), names)


def load_classification(name: str, *, data_dir: str = "", split_seed: int = 0, target: str = "") -> ClassificationData:
    if name == "digits":
        return load_digits(split_seed=split_seed)
    if name == "breast_cancer":
        return load_breast_cancer(split_seed=split_seed)
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir or None)
    if name.endswith(".csv"):
        return load_csv(name, target=target, split_seed=split_seed)
    raise JaxdlError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
