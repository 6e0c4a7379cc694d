"""The one harness: an experiment says what to train (a `Task`), `run` does the rest.

    task.py    Task, Batches, Rounds, Part, Result: what an experiment hands over
    runner.py  run(cfg, experiment, build): run folder, devices, restore, loop, report
    loop.py    the epoch loop, and the state it shares with its hooks
    hooks.py   NaN guard, evaluation, early stopping, metrics log, progress, checkpoints, signals
"""
from jaxdl.harness.runner import run
from jaxdl.harness.task import Batches, Outcome, Part, Result, Rounds, Task

__all__ = ["Batches", "Outcome", "Part", "Result", "Rounds", "Task", "run"]
