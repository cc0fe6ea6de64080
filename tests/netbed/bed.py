"""Two machines on one link, made of Linux network namespaces.

:class:`NetBed` creates a guest and a host namespace (names unique to the
creating process), joins them with a veth pair on a private /30, and runs
processes inside them: ``ftl serve`` in the host's (:meth:`NetBed.serve`), the
fault-injecting proxy (:mod:`proxy`) and the driver in the guest's
(:meth:`NetBed.proxy`, :meth:`NetBed.drive`; :meth:`NetBed.start` to kill a
driver and start it again). All traffic between the two stays on the link.
:meth:`NetBed.limit_bandwidth` shapes the link with ``tbf`` (this kernel has no
``netem``: delay and faults come from the proxy).

:meth:`NetBed.down` kills every process left in either namespace and deletes
both; it runs on exit from the ``with`` block whatever happened inside it.
Creating the bed needs root and iproute2: :func:`namespaces_unavailable` says
why it cannot be made here, for the tests to skip with that reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BANDWIDTH_LIMIT",
    "Driver",
    "DriverProcess",
    "NetBed",
    "ProxyProcess",
    "ServeProcess",
    "namespaces_unavailable",
]

PROXY = Path(__file__).with_name("proxy.py")
#: The directory that holds this package (``import netbed`` works from it).
TESTS = Path(__file__).resolve().parent.parent
#: The driver script's last line starts with this, followed by its JSON result.
RESULT_MARK = "NETBED-RESULT "
#: The bandwidth limit of the issue's scenario: 100 Mbit/s, shaped with tbf.
BANDWIDTH_LIMIT = "100mbit"
#: Where the bed picks its /30 link (private; skipped where the machine uses it).
_LINK_RANGE = ipaddress.ip_network("10.213.0.0/16")


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or ``None`` if they can.

    Tries what the bed does first, ``ip netns add`` (and deletes the probe).
    """
    if shutil.which("ip") is None:
        return "the network test bed needs iproute2's `ip` (apt-get install iproute2)"
    probe = f"ftl-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        reason = made.stderr.strip() or f"exit status {made.returncode}"
        return f"cannot create network namespaces (`ip netns add`: {reason}); the bed needs root"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str) -> str:
    """Run ``ip`` (or ``tc``: first argument) and return its output; raise on failure."""
    argv = list(args) if args[0] == "tc" else ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done.stdout


def _free_link() -> ipaddress.IPv4Network:
    """A /30 of :data:`_LINK_RANGE` no address or route of this machine overlaps."""
    used = []
    for line in _ip("-4", "-o", "addr").splitlines() + _ip("-4", "route").splitlines():
        for word in line.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    links = list(_LINK_RANGE.subnets(new_prefix=30))
    start = os.getpid() % len(links)  # other beds (other processes) start elsewhere
    for link in links[start:] + links[:start]:
        if not any(link.overlaps(net) for net in used if net.prefixlen > 0):
            return link
    raise RuntimeError(f"no free /30 in {_LINK_RANGE}")


def _driver_env(**extra: str) -> dict[str, str]:
    """The environment of processes in the bed: no HTTP proxies (gRPC would use
    them), and this package importable."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


class _Listening:
    """A process in the bed whose first stdout line ends with ``listening on HOST:PORT``."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log
        line = proc.stdout.readline()
        if "listening on" not in line:
            _stop(proc)
            raise RuntimeError(f"{proc.args} did not start: {line!r}\n{self.log_text()}")
        self.address = line.strip().rpartition(" ")[2]

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        _stop(self.proc)


class ServeProcess(_Listening):
    """``ftl serve`` running in the host's namespace."""


class ProxyProcess(_Listening):
    """The fault-injecting proxy running in the guest's namespace."""

    def __init__(self, proc: subprocess.Popen, log: Path, control: Path, events: Path):
        super().__init__(proc, log)
        self.control, self.events_path = control, events

    def events(self) -> list[dict]:
        """The faults' starts and ends so far (see :mod:`proxy`)."""
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]


@dataclass
class Driver:
    """What a driver script in the guest's namespace is told (through its environment)."""

    address: str  #: where to dial the host (the proxy, or the host itself)
    party: str  #: the host party's name
    identity: str  #: the guest's certificate name
    certs: Path  #: folder with ``ca.crt``, ``<identity>.crt``, ``<identity>.key``
    guest_csv: Path  #: the guest's table (ids, features, label ``y``)
    host_csv: Path  #: the host's table, for an in-process reference run only
    audit_log: Path  #: the driver's own audit log
    control: Path | None = None  #: the proxy's control socket

    def environ(self) -> dict[str, str]:
        values = {
            "ADDRESS": self.address,
            "PARTY": self.party,
            "IDENTITY": self.identity,
            "CERTS": str(self.certs),
            "GUEST_CSV": str(self.guest_csv),
            "HOST_CSV": str(self.host_csv),
            "AUDIT_LOG": str(self.audit_log),
            "CONTROL": str(self.control or ""),
        }
        return {f"FTL_NETBED_{k}": v for k, v in values.items()}


class NetBed:
    """A guest and a host namespace joined by a veth pair (see the module docstring).

    Parameters
    ----------
    workdir : path
        Where scripts, logs and the proxy's sockets go.
    tag : str, optional
        Makes the names unique; default: this process's id.

    Attributes
    ----------
    guest_ns, host_ns : str
        The namespaces' names (``ftl-g-<tag>``, ``ftl-h-<tag>``).
    guest_addr, host_addr : str
        Each side's address on the link.
    """

    def __init__(self, workdir: Path, tag: str | None = None):
        tag = tag or str(os.getpid())
        self.workdir = Path(workdir)
        self.guest_ns, self.host_ns = f"ftl-g-{tag}", f"ftl-h-{tag}"
        # interface names: at most 15 characters
        self.guest_dev, self.host_dev = f"ftlg{tag}"[:15], f"ftlh{tag}"[:15]
        self.guest_addr = self.host_addr = ""
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []

    def __enter__(self) -> NetBed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    # -- the link ------------------------------------------------------------------
    def up(self) -> None:
        """Create both namespaces, bring ``lo`` up in each, and join them."""
        link = _free_link()
        guest, host = list(link.hosts())
        self.guest_addr, self.host_addr = str(guest), str(host)
        for ns in (self.guest_ns, self.host_ns):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip(
            "link", "add", self.guest_dev, "netns", self.guest_ns,
            "type", "veth", "peer", "name", self.host_dev, "netns", self.host_ns,
        )  # fmt: skip
        for ns, dev, addr in self._ends():
            _ip("-n", ns, "addr", "add", f"{addr}/{link.prefixlen}", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def _ends(self):
        yield self.guest_ns, self.guest_dev, self.guest_addr
        yield self.host_ns, self.host_dev, self.host_addr

    def limit_bandwidth(self, rate: str = BANDWIDTH_LIMIT) -> None:
        """Shape both directions of the link to ``rate`` (token bucket, ``tbf``)."""
        for ns, dev, _ in self._ends():
            _ip(
                "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root",
                "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms",
            )  # fmt: skip

    def unlimit_bandwidth(self) -> None:
        """Remove the shaping (back to the veth's own speed)."""
        for ns, dev, _ in self._ends():
            subprocess.run(
                ["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True
            )

    def down(self) -> None:
        """Stop every process in the bed and delete both namespaces (idempotent)."""
        for proc in self._procs:
            _stop(proc, grace=3.0)
        self._procs.clear()
        for ns in self._made:
            for pid in self.pids(ns):  # only the bed's own processes run in its namespaces
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        while any(self.pids(ns) for ns in self._made) and time.monotonic() < deadline:
            time.sleep(0.05)
        for ns in self._made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        self._made.clear()

    def pids(self, ns: str) -> list[int]:
        """The processes running in namespace ``ns``."""
        done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()]

    # -- processes --------------------------------------------------------------------
    def popen(self, ns: str, argv: list[str], log: Path, env=None) -> subprocess.Popen:
        """Start ``argv`` in namespace ``ns``; stdout piped, stderr to ``log``."""
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env or _driver_env(),
            )
        self._procs.append(proc)
        return proc

    def serve(self, config: Path) -> ServeProcess:
        """Start ``ftl serve --config config`` in the host's namespace, listening on the
        host's address only (any free port)."""
        log = config.with_suffix(".log")
        argv = [sys.executable, "-m", "ftl", "serve", "--config", str(config)]
        argv += ["--listen", f"{self.host_addr}:0"]
        return ServeProcess(self.popen(self.host_ns, argv, log), log)

    def proxy(
        self,
        upstream: str,
        *,
        rtt_ms: float = 0.0,
        jitter_ms: float = 0.0,
        faults: list[dict] = (),
        name: str = "proxy",
    ) -> ProxyProcess:
        """Start the fault-injecting proxy in the guest's namespace, forwarding to
        ``upstream`` with half of ``rtt_ms`` of delay each way (see :mod:`proxy`)."""
        control, events = self.workdir / f"{name}.sock", self.workdir / f"{name}-events.jsonl"
        for path in (control, events):
            path.unlink(missing_ok=True)
        argv = [
            sys.executable, str(PROXY), "--listen", "127.0.0.1:0", "--upstream", upstream,
            "--delay-ms", str(rtt_ms / 2), "--jitter-ms", str(jitter_ms),
            "--faults", json.dumps(list(faults)), "--control", str(control),
            "--events", str(events),
        ]  # fmt: skip
        log = self.workdir / f"{name}.log"
        return ProxyProcess(self.popen(self.guest_ns, argv, log), log, control, events)

    def drive(self, script: str, driver: Driver, timeout: float = 120.0) -> dict:
        """Run a driver script in the guest's namespace; return its JSON result.

        ``script`` is Python source (dedented here); it reaches the host through
        :mod:`netbed.guest` and ends with :func:`netbed.guest.emit`.
        """
        return self.start(script, driver).result(timeout)

    def start(self, script: str, driver: Driver) -> DriverProcess:
        """Start a driver script (see :meth:`drive`) in the guest's namespace, without
        waiting for it: to kill it and start it again, or to wait for its result."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"driver-{time.monotonic_ns()}.py"
        path.write_text(textwrap.dedent(script))
        env = _driver_env(**driver.environ(), FTL_NETBED_DEVICE=self.guest_dev)
        return DriverProcess(self, path, env)


class DriverProcess:
    """A driver script running in the guest's namespace (:meth:`NetBed.start`).

    Attributes
    ----------
    proc : subprocess.Popen
        The script's current run: :meth:`restart` starts another.
    log : path
        Its standard error, every run's in turn.
    """

    def __init__(self, bed: NetBed, path: Path, env: dict[str, str]):
        self.bed, self.path, self.env = bed, path, env
        self.log = path.with_suffix(".log")
        self.proc = self._run()

    def _run(self) -> subprocess.Popen:
        return self.bed.popen(
            self.bed.guest_ns, [sys.executable, str(self.path)], self.log, self.env
        )

    def _ended(self) -> None:
        with contextlib.suppress(ValueError):  # already forgotten
            self.bed._procs.remove(self.proc)

    def kill(self) -> str:
        """SIGKILL the script's run (as a crash stops it); what the run printed."""
        self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate()
        self._ended()
        return out

    def restart(self) -> None:
        """Start the script again, with the same environment (its last run ended)."""
        self._ended()
        self.proc = self._run()

    def result(self, timeout: float = 120.0) -> dict:
        """Wait for the run to end; its JSON result (raises if it failed or printed none)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(self.proc)
            raise RuntimeError(
                f"driver {self.path.name} still running after {timeout} s\n{self.log.read_text()}"
            ) from None
        finally:
            self._ended()
        if self.proc.returncode != 0 or result_line(out) is None:
            raise RuntimeError(
                f"driver {self.path.name} exited with {self.proc.returncode}:\n{out}\n"
                f"{self.log.read_text()}"
            )
        self.path.with_suffix(".json").write_text(result_line(out))  # for a look after a failure
        return json.loads(result_line(out))


def result_line(out: str) -> str | None:
    """The JSON result in a driver's output (its last :data:`RESULT_MARK` line), or ``None``."""
    results = [line for line in out.splitlines() if line.startswith(RESULT_MARK)]
    return results[-1][len(RESULT_MARK) :] if results else None
