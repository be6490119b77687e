"""A simulated cluster on one Linux machine, for the multi-node tests.

Each node is a network namespace with an address of its own on a private
bridge, no default route, and a hostname of its own (a UTS namespace, made by
the ssh stand-in for every command it runs there).  Optionally each node's
name resolves to 127.0.1.1 inside the node, as Debian and Ubuntu set it.  An
ssh stand-in runs a command inside a node with the clean environment that
sshd gives, not the caller's; MPICH's mpiexec and Open MPI's mpirun start
their remote daemons through it.

Needs root and iproute2 (``ip netns``); ``skip_reason()`` says why not, where
not.  ``SimCluster`` tears down all it made, also when a test fails.

By hand:  python tests/simcluster.py 2     (prints how to use it, Ctrl-C ends it)
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
SSH_STAND_IN = """#!/bin/bash
# ssh HOST COMMAND..., as sshd runs it: inside the node's namespaces, by a shell,
# with sshd's clean environment.
while [[ $1 == -* ]]; do  # ssh's options; those that take a value skip it
    case $1 in -[bcDEeFIiJLlmOopQRSWw]) shift ;; esac
    shift
done
host=$1; shift
while read -r name address namespace; do
    if [[ $host == "$name" || $host == "$address" ]]; then
        exec ip netns exec "$namespace" unshare --uts /bin/bash -c \\
            'hostname "$0" && exec env -i HOME="$HOME" USER="$USER" LOGNAME="$USER" \\
             SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin /bin/bash -c "$1"' \\
            "$name" "$*"
    fi
done < "$(dirname "$0")/hosts"
echo "ssh: Could not resolve hostname $host" >&2
exit 255
"""


def skip_reason() -> str | None:
    """Why the simulated cluster cannot run here, or None."""
    if sys.platform != "linux":
        return "the simulated cluster needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the simulated cluster needs root (ip netns)"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "the simulated cluster needs iproute2 and util-linux (ip, unshare)"
    return None


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route of this machine knows."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(w, strict=False) for w in routes.split() if "/" in w]
    while True:
        second, third = secrets.randbelow(200) + 50, secrets.randbelow(256)
        subnet = ipaddress.ip_network(f"10.{second}.{third}.0/24")
        if not any(subnet.overlaps(u) for u in used):
            return subnet


@dataclass(frozen=True)
class SimNode:
    name: str  # its hostname
    address: str  # on the bridge
    namespace: str
    veth: str  # the host side of its link


class SimCluster:
    """``count`` nodes on a bridge of their own; ``with SimCluster(2) as c: ...``."""

    def __init__(self, count: int, *, loopback_hostname: bool = False) -> None:
        tag = secrets.token_hex(2)
        self.prefix = f"sd{tag}"
        self.subnet = free_subnet()
        hosts = list(self.subnet.hosts())
        self.bridge = f"{self.prefix}br"
        self.bridge_address = str(hosts[0])
        self.nodes = [
            SimNode(f"sim{tag}n{i}", str(hosts[10 + i]), f"{self.prefix}-n{i}",
                    f"{self.prefix}v{i}")
            for i in range(count)
        ]
        self.loopback_hostname = loopback_hostname
        self.folder = Path(f"/tmp/{self.prefix}")
        self.made_netns_etc = not NETNS_ETC.exists()
        self.ssh = self.folder / "ssh"

    def __enter__(self) -> SimCluster:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        self.folder.mkdir(mode=0o755)
        run("ip", "link", "add", self.bridge, "type", "bridge")
        bridge_cidr = f"{self.bridge_address}/{self.subnet.prefixlen}"
        run("ip", "addr", "add", bridge_cidr, "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for index, node in enumerate(self.nodes):
            peer = f"{self.prefix}p{index}"
            run("ip", "netns", "add", node.namespace)
            run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", peer)
            run("ip", "link", "set", peer, "netns", node.namespace)
            run("ip", "-n", node.namespace, "link", "set", peer, "name", "eth0")
            run("ip", "-n", node.namespace, "addr", "add",
                f"{node.address}/{self.subnet.prefixlen}", "dev", "eth0")
            run("ip", "-n", node.namespace, "link", "set", "eth0", "up")
            run("ip", "-n", node.namespace, "link", "set", "lo", "up")
            run("ip", "link", "set", node.veth, "master", self.bridge)
            run("ip", "link", "set", node.veth, "up")
            self.write_hosts(node)
        (self.folder / "hosts").write_text(
            "".join(f"{n.name} {n.address} {n.namespace}\n" for n in self.nodes)
        )
        self.ssh.write_text(SSH_STAND_IN)
        self.ssh.chmod(0o755)

    def write_hosts(self, node: SimNode) -> None:
        """The node's /etc/hosts, which ``ip netns exec`` mounts over the real one."""
        folder = NETNS_ETC / node.namespace
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost"]
        for other in self.nodes:
            own = other == node and self.loopback_hostname
            lines.append(f"{'127.0.1.1' if own else other.address} {other.name}")
        (folder / "hosts").write_text("\n".join(lines) + "\n")

    def processes(self, node: SimNode) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", node.namespace],
                              capture_output=True, text=True, timeout=30)
        return [int(pid) for pid in done.stdout.split()]

    def kill_node(self, node: SimNode) -> None:
        """Every process on the node, as a node that dies takes them all."""
        for pid in self.processes(node):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def add_interface(self, node: SimNode, name: str, cidr: str) -> None:
        """An interface on one node that reaches nothing: one end of a veth pair
        whose other end stays in the node (the sandbox may lack dummy links)."""
        run("ip", "-n", node.namespace, "link", "add", name, "type", "veth",
            "peer", "name", f"{name}x")
        run("ip", "-n", node.namespace, "addr", "add", cidr, "dev", name)
        for link in (name, f"{name}x"):
            run("ip", "-n", node.namespace, "link", "set", link, "up")

    def cut(self, node: SimNode) -> None:
        run("ip", "link", "set", node.veth, "down")

    def down(self) -> None:
        """Remove all it made, whatever state it is in: the processes left in its
        nodes first (a namespace with a process in it outlives ``ip netns del``)."""
        for node in self.nodes:
            self.kill_node(node)
        deadline = time.monotonic() + 10
        while any(self.processes(node) for node in self.nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        for node in self.nodes:
            subprocess.run(["ip", "netns", "del", node.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", node.veth], capture_output=True)
            shutil.rmtree(NETNS_ETC / node.namespace, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.made_netns_etc:
            with contextlib.suppress(OSError):  # another cluster may still use it
                NETNS_ETC.rmdir()

    # MPICH's variables that make its ranks talk over the network, as on separate
    # machines: without them, ranks in different namespaces of one kernel share
    # memory, and a cut link would not cut them off.
    MPICH_ENVIRONMENT = {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp"}

    def mpich(self, ranks: list[int] | int, nodes: list[SimNode] | None = None) -> list[str]:
        """MPICH's mpiexec options for this cluster: ``ranks`` per node in blocks
        (a list, one count a node), or an int: that many ranks one per node in turn;
        ``nodes``: the nodes to use (default: all)."""
        nodes = nodes or self.nodes
        if isinstance(ranks, int):
            hosts, total = ",".join(n.address for n in nodes), ranks
        else:
            hosts = ",".join(f"{n.address}:{k}" for n, k in zip(nodes, ranks, strict=True))
            total = sum(ranks)
        return ["-launcher", "ssh", "-launcher-exec", str(self.ssh), "-iface", self.bridge,
                "-hosts", hosts, "-n", str(total)]


    def openmpi(
        self, ranks: list[int] | int, prefix: Path, nodes: list[SimNode] | None = None
    ) -> list[str]:
        """Open MPI's mpirun options for this cluster, as mpich() gives MPICH's;
        ``prefix``: the environment that holds Open MPI, the same on every node.
        Its daemons and ranks are told the bridge's network, which every node
        and this machine have (its own default would be this machine's address)."""
        nodes = nodes or self.nodes
        if isinstance(ranks, int):
            hosts = ",".join(f"{n.address}:{ranks}" for n in nodes)
            total, mapping = ranks, ["--map-by", "node"]
        else:
            hosts = ",".join(f"{n.address}:{k}" for n, k in zip(nodes, ranks, strict=True))
            total, mapping = sum(ranks), []
        network = str(self.subnet)
        return ["--prtemca", "plm_ssh_agent", str(self.ssh), "--prefix", str(prefix),
                "--host", hosts, "-n", str(total), *mapping, "--oversubscribe",
                "--prtemca", "oob_tcp_if_include", network, "--mca", "btl_tcp_if_include", network]


def mpich_environment(cluster: SimCluster) -> dict[str, str]:
    """What mpich() says, as variables: for a launch line the test does not
    write (the batch script's)."""
    return {"HYDRA_LAUNCHER": "ssh", "HYDRA_LAUNCHER_EXEC": str(cluster.ssh),
            "HYDRA_IFACE": cluster.bridge, **SimCluster.MPICH_ENVIRONMENT}


def openmpi_environment(cluster: SimCluster) -> dict[str, str]:
    """What openmpi() says, as variables (its mpirun, called by its full path,
    finds its own prefix)."""
    network = str(cluster.subnet)
    return {"PRTE_MCA_plm_ssh_agent": str(cluster.ssh),
            "PRTE_MCA_oob_tcp_if_include": network, "OMPI_MCA_btl_tcp_if_include": network,
            "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    if reason := skip_reason():
        sys.exit(reason)
    with SimCluster(count, loopback_hostname="--loopback-hostname" in sys.argv) as cluster:
        print(f"{count} nodes on {cluster.bridge} ({cluster.subnet}):")
        for node in cluster.nodes:
            print(f"    {node.name} {node.address}  (ip netns exec {node.namespace} ...)")
        print(f"ssh stand-in: {cluster.ssh} NODE COMMAND")
        print(f"mpiexec {' '.join(cluster.mpich([3] + [2] * (count - 1)))} "
              "python start_daskmpi.py cupy_test.py")
        print("Ctrl-C tears it down.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("tearing down")


if __name__ == "__main__":
    main()
