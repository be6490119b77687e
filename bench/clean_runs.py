"""Clean runs in a row under load: does any print an ERROR, a traceback, or end
non-zero?

    python bench/clean_runs.py [--runs 50] [--ranks 4] [--load 2] [--out FILE.json]

Each run is the same small job (tests/scripts/report_cluster.py: every worker
asked something, one task), behind nannies, TLS on, on loopback; meanwhile
--load processes spin on the CPU (the other jobs of a shared node), started
here and ended here by their pids.  The heartbeat that met its worker's close
printed an ERROR after 2 of 14 such runs (issue 26).
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from launch import SCRIPTS, launch  # noqa: E402

BAD = re.compile(r"ERROR|CRITICAL|Traceback")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--load", type=int, default=2, help="processes spinning meanwhile")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.load)]
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="clean-runs-") as tmp:
            for number in range(args.runs):
                logs = Path(tmp) / f"logs-{number}"
                run = launch(["--interface", "lo", "--gpus-per-node", "0", "--log-dir", str(logs),
                              "--local-directory", str(Path(tmp) / "scratch"),
                              str(SCRIPTS / "report_cluster.py")], np=args.ranks, timeout=180)
                bad = [line for line in run.output.splitlines() if BAD.search(line)]
                runs.append({"rc": run.rc, "seconds": round(run.seconds, 2), "bad": bad,
                             "leftovers": run.leftovers})
                print(f"run {number + 1}: rc {run.rc}, {run.seconds:.1f} s"
                      + (f", {len(bad)} bad line(s): {bad[0]}" if bad else ""), flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    clean = sum(r["rc"] == 0 and not r["bad"] and not r["leftovers"] for r in runs)
    result = {"machine": platform.node(), "when": time.strftime("%Y-%m-%d"),
              "python": platform.python_version(), "ranks": args.ranks, "load": args.load,
              "runs": len(runs), "clean": clean, "each": runs}
    print(f"{clean} of {len(runs)} runs clean (rc 0, no ERROR, CRITICAL or Traceback line, "
          "nothing left running)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
