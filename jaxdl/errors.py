"""The one error type users see: a clear line on stderr and a non-zero exit."""


class JaxdlError(Exception):
    """Bad input or a run that cannot continue; the CLI prints `error: <msg>` and exits 2."""


class NumericalFault(JaxdlError):
    """A loss or gradient turned NaN/inf; the CLI exits 3."""


class Interrupted(JaxdlError):
    """SIGINT/SIGTERM arrived and a checkpoint was written; the CLI exits 128 + signum."""

    def __init__(self, msg: str, signum: int):
        super().__init__(msg)
        self.signum = signum
