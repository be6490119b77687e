"""What each option's value may be, checked as the user writes it (on the
command line, or as a keyword of the Python API): counts, ports, durations
and walltimes, amounts of memory, module names, hosts, paths.  Each check is
an argparse type: it returns the value, or raises ArgumentTypeError saying
what was expected."""
from __future__ import annotations

import argparse
import ipaddress
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from dask.utils import parse_bytes, parse_timedelta

from start_daskmpi.plan.ports import parse_host_port

MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parse_clock(text: str) -> float:
    """A walltime as batch systems write it: [[DD:]HH:]MM:SS, or seconds."""
    if not re.fullmatch(r"\d+(:\d+){0,3}", text):
        raise ValueError(f"not a walltime: {text!r}")
    seconds = 0.0
    for part, unit in zip(reversed(text.split(":")), (1, 60, 3600, 86400), strict=False):
        seconds += int(part) * unit
    return seconds


def parse_modules(text: str) -> list[str]:
    """--pre-import's value: module names, comma-separated; '' for none."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if not MODULE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not a module name: {bad[0]!r}")
    return names


@dataclass(frozen=True)
class Integer:
    """An argparse type: an integer from ``low`` to ``high``."""

    low: int
    high: int
    expected: str

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = self.low - 1
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")
        return value


positive_int = Integer(1, sys.maxsize, "a positive integer")
# A plan beyond the largest machines would only take minutes and memory to print.
MOST_NODES, MOST_RANKS = 100_000, 1_000_000
node_count = Integer(1, MOST_NODES, f"a node count, 1-{MOST_NODES}")
rank_count = Integer(1, MOST_RANKS, f"a rank count, 1-{MOST_RANKS}")
count = Integer(0, sys.maxsize, "0 or more")
port = Integer(0, 65535, "a port number, 0-65535")


LONGEST_WAIT = 30 * 24 * 3600.0  # seconds: longer than any batch job runs


def seconds(text: str) -> float:
    try:
        value = parse_timedelta(text, default="seconds")
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):  # dask's, for bad text
        value = math.nan
    if not 0 < value <= LONGEST_WAIT:  # nan, too, is refused
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 60, 90s or 2m (at most 30 days), got {text!r}"
        )
    return value


def path_text(text: str) -> str:
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot hold a NUL character")
    return text


def path(text: str) -> Path:
    return Path(path_text(text))


def min_workers(text: str) -> float:
    """A count of workers (1 or more), or a fraction of them (above 0, below 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < 1 or (value >= 1 and value.is_integer())):
        raise argparse.ArgumentTypeError(
            f"expected a number of workers such as 14, or a fraction such as 0.9, got {text!r}"
        )
    return value


def walltime(text: str) -> float:
    """A duration, or a walltime as batch systems write it ([[DD:]HH:]MM:SS)."""
    if ":" not in text:
        return seconds(text)
    try:
        return parse_clock(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a walltime such as 01:30:00, 90m or 5400, got {text!r}"
        ) from None


@dataclass(frozen=True)
class AmountOfMemory:
    """An argparse type: a memory size as Dask and dask-cuda take it, kept as
    typed: one of ``words``, a fraction of the memory (0 to 1), or bytes (80GB,
    or a whole number).  A bare 2.5 would be 2 bytes to them: refused."""

    words: tuple[str, ...]
    expected: str

    def __call__(self, text: str) -> str:
        if text in self.words or is_fraction(text) or is_bytes(text):
            return text
        raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")


def is_fraction(text: str) -> bool:
    try:
        return 0 < float(text) <= 1
    except ValueError:
        return False


def is_bytes(text: str) -> bool:
    try:
        value = parse_bytes(text)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):
        return False
    # A whole number, or a number with its unit: dask truncates a bare 2.5 or 1e3.
    return value > 0 and (text.strip().isdigit() or not text.strip()[-1:].isdigit())


memory_limit = AmountOfMemory(
    ("auto", "0"), "bytes such as 80GB, a fraction such as 0.5, auto or 0"
)
rmm_pool_size = AmountOfMemory((), "bytes such as 70GB or a fraction of the GPU such as 0.9")
device_memory_limit = AmountOfMemory(
    ("auto", "0"), "bytes such as 60GB, a fraction of the GPU such as 0.8, auto or 0"
)


def modules(text: str) -> list[str]:
    try:
        return parse_modules(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def host_port(text: str) -> str:
    try:
        host, _ = parse_host_port(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if host and not is_host(host):
        raise argparse.ArgumentTypeError(
            f"expected [HOST]:PORT with HOST an address or a name of this node, got {text!r}"
        )
    return text


def is_host(text: str) -> bool:
    """An IP address, or a name as DNS allows one (letters, digits, '-', '.')."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return all(
            label and len(label) <= 63 and label.isascii()
            and label.replace("-", "").isalnum() and not label.startswith("-")
            for label in text.split(".")
        )
