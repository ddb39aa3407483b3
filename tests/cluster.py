"""A real local Redis Cluster for tests: 6 redis-server processes (3 masters, each with
one replica) on free ports in a temp dir, created with ``redis-cli --cluster create``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

import redis
from helpers import free_port, wait_for


def _replies(port: int, *command: str) -> Any:
    client = redis.Redis(port=port, decode_responses=True, socket_timeout=2)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


class RedisCluster:
    """Start with :meth:`start`; :meth:`stop` kills every process and removes the files."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.count = masters * (1 + replicas)
        self.replicas = replicas
        self.dir = tempfile.mkdtemp(prefix="flask-chat-cluster-")
        self.ports = [free_port() for _ in range(self.count)]
        # The bus port is set too: the default, port + 10000, may be out of range.
        self.bus_ports = [free_port() for _ in range(self.count)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A seed URL (any node will do)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisCluster:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            os.mkdir(os.path.join(self.dir, str(port)))
            self._launch(port, bus)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )
        self.wait_ok()
        return self

    def _launch(self, port: int, bus: int) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        folder = os.path.join(self.dir, str(port))
        self.procs[port] = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
             "--cluster-enabled", "yes", "--cluster-port", str(bus),
             "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "1500", "--appendonly", "no", "--save", "",
             "--repl-diskless-sync-delay", "0",
             "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._pings(port), timeout=20, what=f"redis-server on port {port}")

    def restart(self, port: int) -> None:
        """Start a killed node again (empty: no persistence); it rejoins the cluster,
        as a replica of the master that took its slots over."""
        self._launch(port, self.bus_ports[self.ports.index(port)])

    def _pings(self, port: int) -> bool:
        try:
            return bool(_replies(port, "PING"))
        except redis.RedisError:
            return False

    def _state_ok(self, port: int) -> bool:
        try:
            info = _replies(port, "CLUSTER", "INFO")
        except redis.RedisError:
            return False
        return "cluster_state:ok" in str(info)

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout: float = 60) -> None:
        """Every live node says the cluster is ok, and every live replica is in sync with
        its master (so that WAIT can be answered)."""
        wait_for(lambda: all(self._state_ok(p) and self._synced(p) for p in self.live_ports()),
                 timeout=timeout, what="cluster_state:ok and replicas in sync on every node")

    def _synced(self, port: int) -> bool:
        try:
            info = redis.Redis(port=port, socket_timeout=2).info("replication")
        except redis.RedisError:
            return False
        return info.get("role") != "slave" or info.get("master_link_status") == "up"

    def master_of(self, key: str) -> int:
        """The port of the live master serving ``key``'s slot."""
        slot = int(_replies(self.live_ports()[0], "CLUSTER", "KEYSLOT", key))
        for line in str(_replies(self.live_ports()[0], "CLUSTER", "NODES")).splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a slot being migrated
                low, _, high = spec.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"no master serves slot {slot}")

    def replica_of(self, port: int) -> int:
        """The port of a live replica of the master on ``port``."""
        lines = str(_replies(port, "CLUSTER", "NODES")).splitlines()
        master_id = next(line.split()[0] for line in lines if "myself" in line.split()[2])
        for line in lines:
            parts = line.split()
            if parts[3] == master_id and "fail" not in parts[2]:
                return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"the master on port {port} has no live replica")

    def manual_failover(self, replica: int) -> None:
        """A graceful failover: the replica on ``replica`` takes its master's slots over
        (the old master stays up, as a replica)."""
        _replies(replica, "CLUSTER", "FAILOVER")

    def kill(self, port: int) -> None:
        """kill -9 one node."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)

    def wait_failover(self, dead: int, key: str, timeout: float = 60) -> int:
        """Wait until a live master serves ``key``'s slot again; returns its port."""
        found: list[int] = []

        def moved() -> bool:
            try:
                port = self.master_of(key)
            except (AssertionError, redis.RedisError):
                return False
            if port == dead or not self._state_ok(port):
                return False
            found.append(port)
            return True

        wait_for(moved, timeout=timeout, what=f"a failover away from port {dead}")
        return found[-1]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        shutil.rmtree(self.dir, ignore_errors=True)
