"""--plan and --launch-command: a job's layout and launch lines, worked out
without MPI from one node like this one."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from start_daskmpi.plan.launchers import LAUNCHERS, carried_variables, launch_command
from start_daskmpi.plan.layout import (
    MIN_WORLD_SIZE,
    Node,
    assign_roles,
    block_placement,
    describe_layout,
)

NODEFILE = "$NODEFILE"  # in a plan's launch lines: the batch system's node file


def ranks_per_node(args: argparse.Namespace, node: Node) -> int:
    """Launchers place the same count on every node: with GPUs, the GPUs + 2
    that the first node needs (2 idle on the others); else -np spread evenly."""
    if node.gpus:
        return len(node.gpus) + 2
    return max(MIN_WORLD_SIZE, math.ceil((args.ranks or 0) / args.nodes))


def job_size(args: argparse.Namespace, node: Node) -> tuple[int, int]:
    """(ranks, ranks a node): -np as given, else the same count on every node."""
    per_node = ranks_per_node(args, node)
    return args.ranks or args.nodes * per_node, per_node


def python_command() -> list[str]:
    """This Python by its path (a launcher's PATH may find another first) and
    this launcher: the entry script beside the package, else the package."""
    entry = Path(__file__).resolve().parents[2] / "start_daskmpi.py"
    if entry.exists():
        return [sys.executable, str(entry)]
    return [sys.executable, "-m", __package__ or "start_daskmpi"]


def plan_report(args: argparse.Namespace, node: Node, environ: Mapping[str, str]) -> str:
    """The layout of ``args.nodes`` nodes like ``node``, and how to launch it."""
    nodes = [replace(node, host=f"node{i}") for i in range(args.nodes)]
    ranks, per_node = job_size(args, node)
    layout = assign_roles(block_placement(ranks, args.nodes), nodes)
    gpus = f"{len(node.gpus)} GPU(s)" if node.gpus else "no GPU (CPU workers)"
    lines = [f"{ranks} ranks on {args.nodes} node(s) of {gpus}, placed in blocks:"]
    lines += [f"    {line}" for line in describe_layout(layout)]
    lines += [f"    note: {note}" for note in layout.notes]
    if node.gpus:
        lines.append(f"Launch lines that give every GPU a worker ({per_node} ranks a node):")
    else:
        lines.append(f"Launch lines for {per_node} ranks a node:")
    script = [args.script, *args.script_args] if args.script else ["your_script.py"]
    hostfile = (args.hostfile or NODEFILE) if args.nodes > 1 else None
    for launcher in LAUNCHERS:
        words = launcher.command(
            args.nodes * per_node, per_node, hostfile, carried_variables(environ)
        )
        line = " ".join(
            word if word == NODEFILE else shlex.quote(word)
            for word in [*words, *python_command(), *script]
        )
        lines.append(f"    {launcher.name}: {line}")
    return "\n".join(lines)


def launch_report(args: argparse.Namespace, node: Node, environ: Mapping[str, str]) -> str:
    """--launch-command: the one command, shell-quoted, that starts this job here."""
    return shlex.join(launch_command(*job_size(args, node), args.hostfile, environ))
