"""--join SCHEDULER_FILE: a second mpirun adds workers to a running cluster of
the same user, and they leave when either job ends; what cannot join says so
in one line."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from other_user import AS_ANOTHER_USER, as_other_user

from launch import LAUNCHER, ROOT, SCRIPTS, Session, launch, our_lines
from start_daskmpi.driver.client_files import (
    ClusterFiles,
    client_variables,
    read_cluster_file,
    read_credentials,
    scheduler_file_text,
)
from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.options import parse_args

pytestmark = pytest.mark.timeout(180)


def first_job(tmp_path, loopback, *script_args):
    """The running cluster: one worker, its scheduler file in the test's folder."""
    session = Session([*loopback, "--scheduler-file", str(session_file(tmp_path)),
                       str(SCRIPTS / "joined.py"), *script_args], np=3)
    session.wait_for("Another client of yours")  # the driver has noted its credentials
    return session


def session_file(tmp_path):
    return tmp_path / "scheduler.json"


def joining(loopback, scheduler_file):
    """The second job's options: its logs apart from the first job's."""
    logs = scheduler_file.parent / "joined-logs"
    return [*loopback, "--log-dir", str(logs), "--join", str(scheduler_file)]


def join(loopback, scheduler_file, np=2, **options):
    return launch(joining(loopback, scheduler_file), np=np, **options)


def test_a_second_job_joins_and_its_workers_leave_when_the_first_ends(tmp_path, loopback):
    with first_job(tmp_path, loopback, "3") as session:
        second = join(loopback, scheduler_file=session_file(tmp_path), timeout=120)
        first = session.finish(timeout=60)
    print(first, second)
    assert first.rc == 0 and first.leftovers == [] and "Traceback" not in first.output, first
    joined = re.search(r"^JOINED (.*)$", first.stdout, re.M)[1].split()
    assert len(joined) == 2 and len({name.rsplit("-", 1)[1] for name in joined}) == 1, joined
    assert "ON A JOINED WORKER 42" in first.stdout
    assert second.rc == 0 and second.leftovers == [] and "Traceback" not in second.output
    assert re.search(r"^Joining the cluster at tls://127\.0\.0\.1:\d+ with 2 worker\(s\)",
                     second.stdout, re.M), second
    assert "the joined workers left" in second.stdout
    # Told to leave by the first job's scheduler, not left to find it gone.
    told = [log for log in (tmp_path / "joined-logs").glob("rank*-worker-process.log")
            if "scheduler-close-worker" in log.read_text()]
    assert len(told) == 2, second



def test_the_joined_job_ends_by_a_signal_and_the_first_goes_on(tmp_path, loopback):
    with first_job(tmp_path, loopback, "3", "until-they-leave") as session:
        with Session(joining(loopback, session_file(tmp_path)), np=2) as second:
            second.wait_for("Joining the cluster")
            session.wait_for("ON A JOINED WORKER 42")
            os.killpg(second.process.pid, signal.SIGTERM)  # as a batch system ends a job
            ended = second.finish(timeout=60)
        first = session.finish(timeout=60)
    print(first, ended)
    assert ended.rc is not None and ended.leftovers == [], ended
    assert "Traceback" not in ended.output, ended
    assert "Interrupted (SIGTERM): the joined workers left" in ended.stdout, ended
    assert first.rc == 0 and first.leftovers == [], first
    assert "LEFT; ON OUR OWN 43" in first.stdout


def test_joining_without_the_credentials_is_one_line(tmp_path, loopback):
    """A scheduler file with no note of ours (written by another tool, or the
    first job's credentials unreadable) for a TLS cluster: refused, one line."""
    file = tmp_path / "other.json"
    file.write_text(json.dumps({"address": "tls://127.0.0.1:1"}))
    run = join(loopback, file, timeout=60)
    assert run.rc == 2 and run.leftovers == [] and "Traceback" not in run.output, run
    assert our_lines(run.stderr) == [
        "start_daskmpi: error: --join: the cluster at tls://127.0.0.1:1 uses TLS, but its "
        "scheduler file does not say where its credentials are: start that job with "
        "start_daskmpi --scheduler-file FILE, and give that FILE"
    ]


def test_join_needs_mpirun_and_runs_no_script(tmp_path):
    done = subprocess.run([sys.executable, str(LAUNCHER), "--join", str(tmp_path / "f")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(
        "start_daskmpi: error: --join runs under mpirun"), done
    with pytest.raises(LaunchError, match="--join adds workers only, and runs no script"):
        parse_args(["--join", "f", "script.py"])


WAITS = """
import pathlib, sys, time
print("READY", flush=True)
deadline = time.monotonic() + 60
while not pathlib.Path(sys.argv[1]).exists() and time.monotonic() < deadline:
    time.sleep(0.2)
"""

OTHER_USER_JOINS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from start_daskmpi.errors import LaunchError
from start_daskmpi.driver.client_files import read_cluster_file, read_credentials
try:
    read_credentials(read_cluster_file(Path(sys.argv[1]), "--join"), "--join")
    print("GOT THE CREDENTIALS")
except LaunchError as e:
    print("REFUSED", e)
try:
    Path(sys.argv[1]).read_text()  # the job writes it 0600: not even the address
    print("READ THE SCHEDULER FILE")
except OSError as e:
    print("UNREADABLE", e)
"""


@AS_ANOTHER_USER
def test_another_user_cannot_join(tmp_path, loopback, shared):
    """The scheduler file in a folder every user can read, the credentials'
    folder in /tmp, as on a login node: another user's job refuses the file,
    which is not theirs, and cannot even read it."""
    script, done = tmp_path / "waits.py", tmp_path / "done"
    script.write_text(WAITS)
    scheduler_file = shared / "scheduler.json"
    with Session([*loopback, "--scheduler-file", str(scheduler_file), str(script), str(done)],
                 np=3, env={"TMPDIR": "/tmp"}) as session:
        session.wait_for("READY")
        other = as_other_user(OTHER_USER_JOINS, str(scheduler_file), str(ROOT))
        done.touch()
        first = session.finish(timeout=60)
    assert first.rc == 0 and first.leftovers == [], first
    refused, unreadable = other.stdout.splitlines()
    assert refused == (f"REFUSED --join {scheduler_file} belongs to root: the job trusts only a "
                       "file of yours that no one else can change"), other
    assert unreadable.startswith("UNREADABLE") and "Permission denied" in unreadable, other


# --- without MPI -----------------------------------------------------------------

def test_the_note_in_the_scheduler_file_names_the_credentials(tmp_path):
    from start_daskmpi.security.ownership import write_own_file

    file = tmp_path / "scheduler.json"
    identity = {"type": "Scheduler", "address": "tls://10.0.0.1:8786", "services": {}}
    write_own_file(file, scheduler_file_text(identity, tmp_path / "p" / "client.env"), "--x")
    assert read_cluster_file(file, "--join") == \
        ClusterFiles("tls://10.0.0.1:8786", tmp_path / "p" / "client.env")
    assert file.stat().st_mode & 0o777 == 0o600
    assert json.loads(file.read_text())["services"] == {}  # what distributed writes, kept
    assert [p.name for p in tmp_path.iterdir()] == ["scheduler.json"]  # nothing left over


@pytest.mark.parametrize("how, said", [
    ("mode", "can be changed by every user (mode 666)"),
    ("group", "can be changed by group gid {gid} (mode 660)"),
    ("folder", "is in {folder}, which can be changed by every user (mode 777)"),
    ("link", "is a link"),
])
def test_a_scheduler_file_others_can_change_is_refused_before_anything_connects(
    tmp_path, how, said
):
    """Whoever can write it can name their own scheduler, and a client.env with
    their own authority: this job's workers would run their code as you."""
    import grp

    gid = next(g for g in range(40000, 60000) if g not in {e.gr_gid for e in grp.getgrall()})
    folder = tmp_path / "shared"
    folder.mkdir()
    file = folder / "scheduler.json"
    file.write_text(json.dumps({"address": "tls://10.0.0.1:8786"}))
    file.chmod(0o600)
    if how == "mode":
        file.chmod(0o666)
    elif how == "group":
        if os.geteuid() != 0:
            pytest.skip("giving a file to another group needs root")
        os.chown(file, -1, gid)
        file.chmod(0o660)
    elif how == "folder":
        folder.chmod(0o777)
    else:
        file.rename(folder / "real.json")
        file.symlink_to(folder / "real.json")
    with pytest.raises(LaunchError) as refused:
        read_cluster_file(file, "--join")
    assert str(refused.value) == (
        f"--join {file} {said.format(folder=folder, gid=gid)}: the job trusts only a file of "
        "yours that no one else can change"
    )


def test_a_client_env_others_can_change_is_refused(tmp_path):
    env = tmp_path / "client.env"
    env.write_text("export DASK_DISTRIBUTED__COMM__TLS__CA_FILE=/x\n")
    env.chmod(0o622)
    with pytest.raises(LaunchError, match=re.escape(
            f"--join: the credentials file {env} can be changed by every user (mode 622)")):
        read_credentials(ClusterFiles("tls://10.0.0.1:8786", env), "--join")


@pytest.mark.parametrize("text, said", [
    (None, "No such file or directory: give the --scheduler-file (or the client.env) of a "
           "running job"),
    ("{not json", "not a scheduler file (no address in it)"),
    ('{"id": 1}', "not a scheduler file (no address in it)"),
    ('["tls://x:1"]', "not a scheduler file (no address in it)"),
])
def test_a_file_that_names_no_cluster_is_one_line(tmp_path, text, said):
    file = tmp_path / "f.json"
    if text is not None:
        file.write_text(text)
    with pytest.raises(LaunchError, match=re.escape(said)):
        read_cluster_file(file, "--join")


def test_client_env_is_read_as_the_shell_reads_it():
    text = ("export DASK_SCHEDULER_ADDRESS=tls://10.0.0.1:8786\n"
            "export DASK_DISTRIBUTED__COMM__TLS__CA_FILE='/tmp/a b/ca.pem'\n")
    assert client_variables(text) == {
        "DASK_SCHEDULER_ADDRESS": "tls://10.0.0.1:8786",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/tmp/a b/ca.pem",
    }


def test_credentials_unreadable_from_here_are_one_line(tmp_path):
    target = ClusterFiles("tls://10.0.0.1:8786", tmp_path / "elsewhere" / "client.env")
    with pytest.raises(LaunchError, match=r"cannot read the credentials of the job at "
                       r"tls://10\.0\.0\.1:8786 \(.*client\.env: No such file or directory\): "
                       r"run this on a node that sees that folder"):
        read_credentials(target, "--join")
    assert read_credentials(ClusterFiles("tcp://10.0.0.1:8786", None), "--join") is None


def test_joining_a_cluster_without_tls_is_said(tmp_path, loopback):
    """The same checks of the scheduler file, and a warning: anyone who can
    reach that cluster can run code as the user, on the joined workers too."""
    plain = [*loopback, "--no-tls"]
    session = Session([*plain, "--scheduler-file", str(session_file(tmp_path)),
                       str(SCRIPTS / "joined.py"), "3"], np=3)
    with session:
        session.wait_for("Another client of yours")
        second = join(plain, scheduler_file=session_file(tmp_path), timeout=120)
        session.finish(timeout=60)
    assert second.rc == 0 and second.leftovers == [], second
    address = re.search(r"Joining the cluster at (tcp://\S+) ", second.stdout)[1]
    assert f"start_daskmpi: warning: the cluster at {address} has no TLS (--no-tls): anyone " \
        "who can reach it can run code as you on it, on these workers too" in our_lines(
            second.stderr), second
