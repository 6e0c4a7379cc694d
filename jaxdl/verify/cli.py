"""`python -m jaxdl verify` (`make verify`): every hand-derived derivative against autodiff.

    python -m jaxdl verify                      # the whole registry, one table
    python -m jaxdl verify --filter softmax     # checks whose name contains "softmax"
    python -m jaxdl verify --out DIR            # also DIR/verify.json

Each row is one check from `jaxdl.verify.registry.discover()`: its name, layout, shapes,
the largest relative error of the hand result against autodiff (see
`jaxdl.matcalc.compare`), the tolerance and the outcome:

    ok        the hand result matches
    FAIL      it does not
    xfail     a deliberately wrong derivation (expect_fail) failed, as it must
    XPASS     a deliberately wrong derivation passed: the check has lost its power
    ERROR     computing the check raised

Exit status: 0 when every row is ok or xfail, 1 otherwise, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax

from jaxdl.errors import JaxdlError
from jaxdl.matcalc import compare
from jaxdl.verify import registry

GOOD = ("ok", "xfail")


@dataclass
class Outcome:
    name: str
    layout: str
    shapes: str
    status: str  # ok | FAIL | xfail | XPASS | ERROR
    max_abs_err: float
    max_rel_err: float
    rtol: float
    expect_fail: bool
    seconds: float
    reason: str = ""

    @property
    def good(self) -> bool:
        return self.status in GOOD

    def to_dict(self) -> dict:
        finite = lambda v: v if math.isfinite(v) else str(v)  # noqa: E731 -- JSON has no inf/nan
        return {"name": self.name, "layout": self.layout, "shapes": self.shapes, "status": self.status,
                "good": self.good, "max_abs_err": finite(self.max_abs_err), "max_rel_err": finite(self.max_rel_err),
                "rtol": self.rtol, "expect_fail": self.expect_fail, "seconds": round(self.seconds, 4),
                "reason": self.reason}


def run_check(check: registry.Check) -> Outcome:
    """Compute one check and judge it."""
    t0 = time.perf_counter()
    try:
        hand, autodiff = check.compute()
        report = compare(hand, autodiff, rtol=check.rtol, layout=check.layout)
    except Exception as e:  # noqa: BLE001 -- a crashing check is reported, not fatal
        return Outcome(check.name, check.layout, check.shapes, "ERROR", math.nan, math.nan,
                       check.rtol or math.nan, check.expect_fail, time.perf_counter() - t0,
                       f"{type(e).__name__}: {e}".splitlines()[0])
    if check.expect_fail:
        status = "XPASS" if report.passed else "xfail"
    else:
        status = "ok" if report.passed else "FAIL"
    reason = report.reason
    if status == "XPASS":
        reason = "a derivation registered as wrong matched autodiff"
    return Outcome(check.name, check.layout, check.shapes, status, report.max_abs_err, report.max_rel_err,
                   report.rtol, check.expect_fail, time.perf_counter() - t0, reason)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise JaxdlError(f"verify: {message}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m jaxdl verify",
                     description="Check every hand-derived derivative in the registry against autodiff.")
    parser.add_argument("--filter", default="", metavar="SUBSTR",
                        help="only checks whose name contains SUBSTR (case-insensitive)")
    parser.add_argument("--out", default="", metavar="DIR", help="write DIR/verify.json")
    return parser.parse_args(argv)


def _fmt_err(v: float) -> str:
    return "-" if math.isnan(v) else "inf" if math.isinf(v) else f"{v:.1e}"


def _columns(checks: list[registry.Check]) -> list[tuple[str, int]]:
    width = lambda values, title, cap: min(max([len(title), *map(len, values)]), cap)  # noqa: E731
    return [("name", width([c.name for c in checks], "name", 66)),
            ("layout", width([c.layout for c in checks], "layout", 12)),
            ("shapes", width([c.shapes for c in checks], "shapes", 44)),
            ("max rel err", 11), ("rtol", 7), ("result", 6)]


def _row(values: list[str], columns) -> str:
    cells = []
    for value, (_, w) in zip(values, columns):
        cells.append(value if len(value) <= w else value[:w - 1] + "~")
    return "  ".join(c.ljust(w) for c, (_, w) in zip(cells, columns)).rstrip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    checks = registry.discover()
    if args.filter:
        checks = [c for c in checks if args.filter.lower() in c.name.lower()]
        if not checks:
            raise JaxdlError(f"verify: no check's name contains {args.filter!r}")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise JaxdlError(f"verify: --out {args.out} is a file, not a folder")

    columns = _columns(checks)
    print(_row([title for title, _ in columns], columns))
    print(_row(["-" * w for _, w in columns], columns), flush=True)
    t0 = time.perf_counter()
    outcomes = []
    for check in checks:
        o = run_check(check)
        outcomes.append(o)
        print(_row([o.name, o.layout, o.shapes, _fmt_err(o.max_rel_err), f"{o.rtol:.0e}", o.status], columns),
              flush=True)
        if not o.good and o.reason:
            print(f"    {o.status}: {o.reason}", flush=True)
    seconds = time.perf_counter() - t0

    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "xfail", "FAIL", "XPASS", "ERROR")}
    bad = counts["FAIL"] + counts["XPASS"] + counts["ERROR"]
    print(f"\n{len(outcomes)} checks in {seconds:.1f} s: {counts['ok']} ok, {counts['xfail']} failed as "
          f"expected (deliberately wrong derivations), {bad} unexpected "
          f"({counts['FAIL']} FAIL, {counts['XPASS']} XPASS, {counts['ERROR']} ERROR)")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "verify.json").write_text(json.dumps({
            "counts": counts, "unexpected": bad, "seconds": round(seconds, 2), "filter": args.filter,
            "jax_version": jax.__version__, "backend": jax.default_backend(),
            "checks": [o.to_dict() for o in outcomes]}, indent=2) + "\n")
        print(f"wrote {out_dir / 'verify.json'}")
    return 1 if bad else 0
