"""Data: readers, synthetic sets with known answers, keyed shuffles. Nothing here downloads in tests.
Submodules are imported when first named."""
from jaxdl.lazy import lazy_package

__all__, __getattr__, __dir__ = lazy_package(__name__, (
    "bounded", "classification", "download", "fashion_mnist", "federated", "idx", "kg", "named", "randomness",
    "reference_split", "synthetic", "tabular", "text"),
    {"load_classification": "classification", "load_kg": "kg", "synthetic_kg": "kg"})
