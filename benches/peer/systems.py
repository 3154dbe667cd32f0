"""The three systems under test: installing, building, loading data, starting and stopping.

Every server binds 127.0.0.1 on a free port, writes its log into the work dir and is stopped
by its PID (SIGTERM, then SIGKILL) by the caller's `finally`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

PACKAGES = {"prometheus": "prometheus", "promtool": "prometheus", "victoria-metrics": "victoria-metrics"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- setup ----------------------------------------------------------------------------------------

def ensure_packages(skip_install: bool) -> list:
    """apt-get installs the Debian packages whose commands are missing. Returns what it
    installed. A package's postinst may start its systemd service (Prometheus on :9090,
    VictoriaMetrics on :8428); those would compete for CPU, so services started by this
    install are stopped again."""
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if shutil.which(cmd) is None})
    if not missing:
        return []
    if skip_install:
        raise SystemExit(f"missing commands from Debian packages {missing} and --skip-install was given")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(missing)} with apt-get")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=True, env=env)
    if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        for unit in missing:
            subprocess.run(sudo + ["systemctl", "stop", unit], check=False)
    return missing


def busy_peers() -> list:
    """PIDs and names of other running Prometheus / VictoriaMetrics processes (they would
    skew the timings)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in ("prometheus", "victoria-metric"):  # comm is cut at 15 characters
            found.append(f"{pid} {comm}")
    return found


def target_dir(repo: str) -> str:
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")


def profile_dir(profile: str) -> str:
    # Cargo's built-in profiles share directories: test builds go to debug/, bench to release/.
    return {"dev": "debug", "test": "debug", "bench": "release"}.get(profile, profile)


class Build:
    """`cargo build --profile P` in the background, so the package install and the dataset
    generation (which do not need Quiver) overlap with it."""

    def __init__(self, repo: str, profile: str):
        self.profile = profile
        deps = os.path.join(target_dir(repo), profile_dir(profile), "deps")
        # Whether this build starts from nothing (a fresh clone) or reuses compiled crates.
        self.from_empty = not (os.path.isdir(deps) and os.listdir(deps))
        self.log_path = os.path.join(tempfile.gettempdir(), f"quiver-peer-build-{os.getpid()}.log")
        self.t0 = time.monotonic()
        log(f"building Quiver (cargo build --profile {profile}, "
            f"{'from an empty target dir' if self.from_empty else 'reusing compiled crates'}) "
            f"in the background; log {self.log_path}")
        self._log = open(self.log_path, "w")
        # Its own process group, so stopping it also stops the rustc processes cargo started.
        self.proc = subprocess.Popen(["cargo", "build", "--profile", profile, "--bin", "quiver"],
                                     cwd=repo, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.seconds = None

    def wait(self) -> float:
        rc = self.proc.wait()
        self.seconds = round(time.monotonic() - self.t0, 1)
        self._log.close()
        if rc != 0:
            with open(self.log_path) as f:
                tail = f.read()[-4000:]
            raise SystemExit(f"cargo build failed (exit {rc}):\n{tail}")
        log(f"build finished after {self.seconds:.0f}s")
        return self.seconds

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()


def versions(quiver_bin: str, repo: str) -> dict:
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    def deb(pkg):  # the Debian builds print no version of their own (victoria-metrics)
        v = first_line(["dpkg-query", "-W", "-f", "${Version}", pkg])
        return f"{pkg} {v} (Debian)" if v != "unknown" and "no packages" not in v else first_line([pkg, "--version"])
    built = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(quiver_bin)))
    rev = first_line(["git", "-C", repo, "describe", "--always", "--dirty"])
    return {
        "quiver": f"{first_line([quiver_bin, '--version'])} (binary built {built} UTC; tree at run time {rev})",
        "prometheus": deb("prometheus"),
        "victoria-metrics": deb("victoria-metrics"),
    }


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    os_name = "unknown"
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            m = re.search(r'PRETTY_NAME="([^"]+)"', f.read())
            os_name = m.group(1) if m else os_name
    return {"nproc": os.cpu_count(), "cpu": model, "mem_bytes": mem_kb * 1024, "os": os_name}


# --- measuring --------------------------------------------------------------------------------------

def cpu_snapshot() -> tuple:
    """(CPU seconds the whole machine was busy, CPU seconds of this process and its waited-for
    children: generator workers, promtool, quiver import, the stopped servers)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    busy = sum(fields[:8]) - fields[3] - fields[4]
    own = sum(getattr(resource.getrusage(who), a) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for a in ("ru_utime", "ru_stime"))
    return busy / os.sysconf("SC_CLK_TCK"), own


def cpu_since(snapshot: tuple) -> dict:
    """CPU seconds used since `snapshot` by the harness (with everything it started and
    stopped) and by other processes on the machine, which competed with the benchmark."""
    busy0, own0 = snapshot
    busy1, own1 = cpu_snapshot()
    return {"machine_busy_s": round(busy1 - busy0, 1), "harness_s": round(own1 - own0, 1),
            "others_s": round(max(0.0, (busy1 - busy0) - (own1 - own0)), 1)}


def disk_usage(path: str) -> dict:
    """Allocated bytes (as `du` counts them) and apparent bytes (sum of file sizes)."""
    allocated = apparent = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:  # deleted by compaction meanwhile
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return {"allocated": allocated, "apparent": apparent}


def wait_disk_settled(paths: dict, quiet_s: float = 5.0, limit_s: float = 120.0) -> dict:
    """Polls the sizes of the dirs in `paths` (name -> dir) until none has changed for
    `quiet_s` (background merges or compaction finished), at most `limit_s`. Returns
    name -> disk_usage."""
    deadline = time.monotonic() + limit_s
    last = {k: disk_usage(p) for k, p in paths.items()}
    since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(1)
        cur = {k: disk_usage(p) for k, p in paths.items()}
        if cur != last:
            last, since = cur, time.monotonic()
    return last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- servers ----------------------------------------------------------------------------------------

class Server:
    """A server process on 127.0.0.1:port."""

    def __init__(self, name: str, argv: list, port: int, data_dir: str, log_path: str, ready_path: str):
        self.name, self.argv, self.port = name, argv, port
        self.data_dir, self.log_path, self.ready_path = data_dir, log_path, ready_path
        self.proc = None
        self.started_s = None  # seconds from spawn to ready

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 300) -> None:
        log(f"starting {self.name}: {' '.join(self.argv)}")
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            # Own session: a Ctrl-C in the terminal reaches only the harness, which then stops
            # the servers itself (in order, after reading what it needs).
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = t0 + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _ = http_get(self.port, self.ready_path, timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {ready_timeout}s; see {self.log_path}")
            time.sleep(0.2)
        self.started_s = time.monotonic() - t0
        log(f"{self.name} ready on {self.url} after {self.started_s:.1f}s (pid {self.proc.pid})")

    def peak_rss(self):
        """VmHWM (peak resident set) of the server process, bytes; None if it is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            return int(m.group(1)) * 1024 if m else None
        except (OSError, AttributeError):
            return None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        log(f"stopping {self.name} (pid {self.proc.pid})")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def http_get(port: int, path: str, timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def prometheus(workdir: str, data_dir: str) -> Server:
    cfg = os.path.join(workdir, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("# No scrape jobs: the server only answers queries over backfilled blocks.\n"
                "global:\n  scrape_interval: 1m\n")
    port = free_port()
    return Server("prometheus", [
        "prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
        "--log.level=warn",
    ], port, data_dir, os.path.join(workdir, "prometheus.log"), "/-/ready")


def victoria_metrics(workdir: str, data_dir: str) -> Server:
    port = free_port()
    return Server("victoria-metrics", [
        "victoria-metrics", f"-storageDataPath={data_dir}", f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=30d",
        # The same query time limit as Prometheus's and Quiver's defaults (VM's is 30 s).
        "-search.maxQueryDuration=120s",
        "-loggerLevel=WARN",
    ], port, data_dir, os.path.join(workdir, "victoria-metrics.log"), "/health")


def quiver(quiver_bin: str, workdir: str, data_dir: str) -> Server:
    port = free_port()
    return Server("quiver", [
        quiver_bin, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}",
    ], port, data_dir, os.path.join(workdir, "quiver.log"), "/-/ready")


# --- loading ------------------------------------------------------------------------------------------

def _run_logged(argv: list, log_path: str) -> float:
    log(f"running {' '.join(argv)}")
    t0 = time.monotonic()
    with open(log_path, "ab") as logf:
        r = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with {r.returncode}; see {log_path}")
    return time.monotonic() - t0


def backfill_prometheus(om_path: str, data_dir: str, workdir: str) -> float:
    """promtool re-reads the whole input once per block window; the widest window Prometheus
    itself compacts to with 30 d retention (54 h) cuts that to one or two passes."""
    return _run_logged(["promtool", "tsdb", "create-blocks-from", "openmetrics",
                        "--max-block-duration=54h", om_path, data_dir],
                       os.path.join(workdir, "promtool.log"))


def import_quiver(quiver_bin: str, om_path: str, data_dir: str, workdir: str) -> float:
    return _run_logged([quiver_bin, "import", "--data-dir", data_dir, om_path],
                       os.path.join(workdir, "quiver-import.log"))


def _post_file(port: int, path: str, file_path: str) -> None:
    size = os.path.getsize(file_path)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600, blocksize=1 << 20)
    try:
        with open(file_path, "rb") as f:
            conn.request("POST", path, body=f, headers={"Content-Length": str(size),
                                                        "Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
        if r.status >= 300:
            raise RuntimeError(f"POST {path} of {file_path}: {r.status} {body[:300]!r}")
    finally:
        conn.close()


def import_victoria_metrics(vm: Server, jsonl_paths: list) -> float:
    """Streams the JSON-line files to /api/v1/import concurrently (one connection each),
    then forces a flush so everything is searchable."""
    t0 = time.monotonic()
    errors = []

    def post(p):
        try:
            _post_file(vm.port, "/api/v1/import", p)
        except Exception as e:  # reported below, in the main thread
            errors.append(e)
    threads = [threading.Thread(target=post, args=(p,)) for p in jsonl_paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    status, body = http_get(vm.port, "/internal/force_flush", timeout=600)
    if status != 200:
        raise RuntimeError(f"force_flush: {status} {body[:200]!r}")
    return time.monotonic() - t0


def instant_value(port: int, query: str, at_s: float, extra: dict | None = None):
    """The single value of an instant query (None when empty), for load checks."""
    params = {"query": query, "time": f"{at_s:.3f}", **(extra or {})}
    status, body = http_get(port, "/api/v1/query?" + urllib.parse.urlencode(params), timeout=120)
    if status != 200:
        raise RuntimeError(f"{query}: {status} {body[:300]!r}")
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_series_visible(server: Server, expected: int, at_s: float, extra: dict | None = None,
                        limit_s: float = 300) -> float:
    """Polls `count({__name__=~".+"})` at the data end until all `expected` series are
    visible (VictoriaMetrics makes imported rows searchable asynchronously)."""
    t0 = time.monotonic()
    seen = None
    while time.monotonic() - t0 < limit_s:
        seen = instant_value(server.port, 'count({__name__=~".+"})', at_s, extra)
        if seen == expected:
            return time.monotonic() - t0
        time.sleep(1)
    raise RuntimeError(f"{server.name}: {seen} series visible at the data end, expected {expected}")


def metrics_text(server: Server) -> str:
    status, body = http_get(server.port, "/metrics", timeout=30)
    return body.decode("utf-8", "replace") if status == 200 else ""


def metric_sum(text: str, name: str):
    """Sum of every sample of metric `name` in Prometheus text format; None if absent."""
    total, found = 0.0, False
    pat = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})?\s+(\S+)")
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            total += float(m.group(1))
            found = True
    return total if found else None


def wait_vm_merges(vm: Server, limit_s: float = 300) -> None:
    """Waits until VictoriaMetrics reports no active background merges."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        active = metric_sum(metrics_text(vm), "vm_active_merges")
        if not active:
            return
        time.sleep(1)
