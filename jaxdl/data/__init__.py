"""Data: readers, synthetic sets with known answers, keyed shuffles. Nothing here downloads in tests."""
from jaxdl.data import classification, federated, kg, randomness, synthetic, tabular, text
from jaxdl.data.classification import load_classification
from jaxdl.data.kg import load_kg, synthetic_kg

__all__ = ["classification", "federated", "kg", "load_classification", "load_kg", "randomness", "synthetic",
           "synthetic_kg", "tabular", "text"]
