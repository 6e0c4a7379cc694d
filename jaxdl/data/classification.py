"""Classification data sets by config name."""
from __future__ import annotations

from jaxdl.data.fashion_mnist import load_fashion_mnist
from jaxdl.data.tabular import ClassificationData, load_breast_cancer, load_digits
from jaxdl.errors import JaxdlError

DATASETS = ("digits", "breast_cancer", "fashion_mnist")


def load_classification(name: str, *, data_dir: str = "", split_seed: int = 0) -> ClassificationData:
    if name == "digits":
        return load_digits(split_seed=split_seed)
    if name == "breast_cancer":
        return load_breast_cancer(split_seed=split_seed)
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir or None)
    raise JaxdlError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
