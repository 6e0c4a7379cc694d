"""jaxdl: Dive into Deep Learning and federated KG embedding as pure JAX functions.

Rooms (data flows one way): data -> models -> losses -> train (step, loop) -> experiments.
"""

__version__ = "0.1.0"
