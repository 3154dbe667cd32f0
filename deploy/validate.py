#!/usr/bin/env python3
"""Validates the deploy kit without a container runtime and without cargo.

    python3 deploy/validate.py                 # every check; a missing tool is a failure
    python3 deploy/validate.py --skip-missing  # a missing tool is reported as SKIP
    python3 deploy/validate.py --quiver target/release/quiver   # also run a real Quiver

Tools it uses (install once):
    python3 -m venv /tmp/quiver-deploy-venv
    /tmp/quiver-deploy-venv/bin/pip install kubernetes-validate   # also brings PyYAML
    apt-get install prometheus docker-compose systemd              # promtool, docker-compose 1.29, systemd-analyze
    then run it as /tmp/quiver-deploy-venv/bin/python deploy/validate.py
kubectl (`kubectl kustomize`) or kustomize assembles the Kubernetes base when present;
otherwise this script assembles it itself (resources + configMapGenerator).

Flag names, QUIVER_* variables, TOML keys and metric names are read from the Rust
sources (src/config.rs, src/storage/objstore.rs, src/main.rs, src/api/metrics.rs), so the
kit is checked against what the code accepts today; the settings structs are found from
ServeArgs down its #[command(flatten)] fields. The cluster shapes (compose/cluster.yaml,
kubernetes/cluster/) are also checked against the roles of src/config.rs and the routes
each role serves (src/cluster/*.rs, src/api/routes.rs). Exit status 0 only if nothing
failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_CLUSTER = K8S / "cluster"
COMPOSE = DEPLOY / "compose"
GRAFANA = DEPLOY / "grafana"
SYSTEMD = DEPLOY / "systemd"
# Kubernetes versions the manifests must validate against: kubernetes-validate's newest
# schema (None) and an older one still in wide use.
K8S_VERSIONS = [None, "1.30.0"]

try:
    import yaml
except ImportError:  # reported as a failure by main()
    yaml = None


class Missing(Exception):
    """A tool the check needs is not installed."""


class Report:
    def __init__(self, skip_missing: bool):
        self.skip_missing = skip_missing
        self.results: list[tuple[str, str, str]] = []

    def run(self, name: str, fn) -> None:
        try:
            detail = fn() or ""
            status = "PASS"
        except Missing as e:
            status, detail = ("SKIP" if self.skip_missing else "FAIL"), f"missing tool: {e}"
        except AssertionError as e:
            status, detail = "FAIL", str(e) or "assertion failed"
        except Exception as e:  # noqa: BLE001 - any crash of a check is its failure
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
        self.results.append((status, name, detail))
        print(f"{status:4} {name}")
        for line in detail.splitlines():
            print(f"     {line}")
        sys.stdout.flush()

    def summary(self) -> int:
        n = {s: sum(1 for r in self.results if r[0] == s) for s in ("PASS", "FAIL", "SKIP")}
        print(f"\n{n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped")
        return 1 if n["FAIL"] else 0


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def tool(name: str) -> str:
    """A program on PATH, or beside this interpreter (an unactivated venv)."""
    found = shutil.which(name)
    if not found:
        beside = Path(sys.executable).parent / name
        if beside.exists():
            found = str(beside)
    if not found:
        raise Missing(name)
    return found


def load_yaml_all(text: str) -> list:
    if yaml is None:
        raise Missing("PyYAML (pip install pyyaml)")
    return [d for d in yaml.safe_load_all(text) if d is not None]


# ------------------------------------------------------------------ facts from the sources

def rust_struct_fields(src: str, struct: str) -> list[tuple[str, str, str]]:
    """(attributes, field name, type) of each `pub field: Type` of `pub struct <struct> { … }`;
    an attribute may span lines (`#[arg(\n long = …,\n env = …\n)]`)."""
    m = re.search(r"pub struct " + struct + r"\s*\{(.*?)\n\}", src, re.S)
    check(m is not None, f"struct {struct} not found in the sources")
    out, attrs, open_attr = [], [], None
    for line in m.group(1).splitlines():
        s = line.strip()
        if open_attr is not None:
            open_attr += " " + s
            if s.endswith("]"):
                attrs.append(open_attr)
                open_attr = None
        elif s.startswith("#["):
            if s.endswith("]"):
                attrs.append(s)
            else:
                open_attr = s
        elif s.startswith("pub "):
            m2 = re.match(r"pub (\w+):\s*(.+?),?$", s)
            out.append((" ".join(attrs), m2.group(1), m2.group(2)))
            attrs = []
        elif s.startswith("///") or not s:
            continue
    return out


def flag_of(attrs: str, name: str) -> str | None:
    """The long flag a field declares (`long = "x"`, or bare `long` for its name)."""
    if "arg(" not in attrs or "skip" in attrs and "arg(skip)" in attrs.replace(" ", ""):
        return None
    m = re.search(r'long = "([a-z0-9-]+)"', attrs)
    if m:
        return "--" + m.group(1)
    if re.search(r"\blong\b", attrs):
        return "--" + name.replace("_", "-")
    return None


def settings_sections(src: str, struct: str = "ServeArgs", section: str = "") -> dict[str, str]:
    """Config-file section -> settings struct, from `ServeArgs` down its `#[command(flatten)]`
    fields: a flattened field `pub storage: StorageArgs` is the section [storage], and its
    own flattened `pub s3: S3Args` is [storage.s3]. No list to keep up to date: a struct
    flattened into the settings is found here."""
    out = {section: struct}
    for attrs, name, ty in rust_struct_fields(src, struct):
        if "flatten" in attrs:
            inner = re.sub(r"<.*", "", ty).split("::")[-1]
            out.update(settings_sections(src, inner, f"{section}.{name}" if section else name))
    return out


class Facts:
    """What the code accepts: flags, variables, config keys, metric names, roles."""

    def __init__(self):
        config_rs = (ROOT / "src/config.rs").read_text()
        objstore_rs = (ROOT / "src/storage/objstore.rs").read_text()
        main_rs = (ROOT / "src/main.rs").read_text()
        # Metrics are declared in /metrics' module and in the storage engine's telemetry.
        metrics_rs = "".join((ROOT / f).read_text() for f in (
            "src/api/metrics.rs", "src/storage/telemetry.rs", "src/api/process_metrics.rs",
            "src/api/memory_metrics.rs"))
        self.flags: set[str] = set()
        self.env: set[str] = set()
        # Every setting is declared once, in the settings structs (src/config.rs): its flag,
        # its variable, its default, and (the field name, in its struct's section) its
        # config-file key. flag -> {env, section, key, default}.
        self.settings: dict[str, dict] = {}
        self.sections = settings_sections(config_rs)
        for section, struct in self.sections.items():
            for attrs, name, _ in rust_struct_fields(config_rs, struct):
                flag = flag_of(attrs, name)
                e = re.search(r'env = "([A-Z0-9_]+)"', attrs)
                if flag:
                    self.flags.add(flag)
                    d = re.search(r'default_value(?:_t)? = ("([^"]*)"|[^,)]+)', attrs)
                    self.settings[flag] = {
                        "env": e.group(1) if e else None, "section": section, "key": name,
                        "default": None if not d else d.group(2) if d.group(2) is not None else d.group(1).strip()}
                if e:
                    self.env.add(e.group(1))
        # The log filter is read in main.rs (tracing's EnvFilter), not by clap.
        self.env |= set(re.findall(r'from_env\("(QUIVER_[A-Z0-9_]+)"\)', main_rs))
        def keys(struct: str) -> set[str]:
            """File keys of a struct's fields: not flattened sections, not `serde(skip)`."""
            return {n for a, n, _ in rust_struct_fields(config_rs, struct)
                    if "flatten" not in a and "serde(skip)" not in a}
        self.toml = {section: keys(struct) for section, struct in self.sections.items()}
        # Cluster roles (`--role`): the variants of `enum Role`, as clap spells them.
        role_enum = re.search(r"pub enum Role\s*\{(.*?)\}", config_rs, re.S)
        self.roles = set() if role_enum is None else {
            re.sub(r"(?<!^)(?=[A-Z])", "-", v).lower()
            for v in re.findall(r"^\s*([A-Z]\w*),", role_enum.group(1), re.M)}
        grace = re.search(r'QUIVER_SHUTDOWN_GRACE_PERIOD", default_value = "(\d+)s"', config_rs)
        check(grace is not None, "default shutdown grace period not found in src/config.rs")
        self.default_grace_s = int(grace.group(1))
        listen = re.search(r'QUIVER_LISTEN", default_value = "(127\.0\.0\.1:\d+)"', config_rs)
        check(listen is not None, "default listen address not found in src/config.rs")
        self.default_port = int(listen.group(1).rsplit(":", 1)[1])
        names = set(re.findall(r'"(quiver_[a-z0-9_]+)"', metrics_rs))
        hist = set(re.findall(r'(?:HistogramOpts::new|histogram)\(\s*"(quiver_[a-z0-9_]+)"', metrics_rs))
        self.histograms = hist
        self.metrics = (names - hist) | {h + s for h in hist for s in ("_bucket", "_sum", "_count")}
        self.rust_version = re.search(r'rust-version = "([\d.]+)"',
                                      (ROOT / "Cargo.toml").read_text()).group(1)


def duration_s(text: str) -> float:
    """Prometheus-style duration (`30s`, `1m30s`, `2h`) or systemd's (`60s`, `1min`, bare seconds)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w|y)", text):
        check(m.start() == pos, f"bad duration {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    check(pos == len(text) and pos > 0, f"bad duration {text!r}")
    return total


def check_quiver_args(facts: Facts, args: list[str], where: str) -> None:
    """`quiver serve …` arguments: subcommand and every flag known to src/config.rs."""
    check(args[:1] == ["serve"], f"{where}: runs {args[:1]}, not `serve`")
    for a in args[1:]:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            check(flag in facts.flags, f"{where}: unknown flag {flag} (not in src/config.rs)")


def check_toml(facts: Facts, path: Path) -> dict:
    data = tomllib.loads(path.read_text())

    def walk(table: dict, section: str):
        allowed = facts.toml.get(section)
        for k, v in table.items():
            key = f"{section}.{k}" if section else k
            if section == "" and k == "auth":
                continue  # auth has its own structs (src/auth/config.rs); not used by the kit
            if isinstance(v, dict):
                check(key in facts.toml, f"{path.relative_to(ROOT)}: unknown section [{key}]")
                walk(v, key)
            else:
                check(k in allowed, f"{path.relative_to(ROOT)}: unknown key {key!r} (not in src/config.rs)")

    walk(data, "")
    for key in ("compaction_interval", "query_timeout", "shutdown_grace_period"):
        if key in data:
            duration_s(data[key])
    for key in ("lease", "commit_interval", "poll_interval", "deletion_delay", "ha_failover_timeout"):
        if key in data.get("cluster", {}):
            duration_s(data["cluster"][key])
    return data


def listen_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ------------------------------------------------------------------ checks

def check_sources(facts: Facts) -> str:
    check(len(facts.flags) > 30, f"only {len(facts.flags)} flags found in src/config.rs")
    check(len(facts.metrics) > 20, f"only {len(facts.metrics)} metrics found in src/api/metrics.rs")
    return (f"{len(facts.flags)} flags, {len(facts.env)} QUIVER_* variables, "
            f"{sum(len(v) for v in facts.toml.values())} TOML keys in sections "
            f"{', '.join(f'[{s}]' if s else 'top level' for s in facts.sections)} "
            f"(ServeArgs and its flattened structs: {', '.join(facts.sections.values())}), "
            f"{len(facts.metrics)} metric names; roles {', '.join(sorted(facts.roles)) or 'none'}; "
            f"default listen port {facts.default_port}, shutdown grace {facts.default_grace_s}s")


def check_toml_files(facts: Facts) -> str:
    files = sorted(DEPLOY.glob("*.toml")) + [COMPOSE / "quiver.toml", K8S / "quiver.toml",
                                             COMPOSE / "cluster.toml", K8S_CLUSTER / "quiver.toml"]
    for f in files:
        check_toml(facts, f)
    return "keys known to src/config.rs's settings: " + ", ".join(str(f.relative_to(ROOT)) for f in files)


def dockerfile_facts(text: str) -> dict:
    joined = re.sub(r"\\\n", " ", text)
    lines = [l.strip() for l in joined.splitlines() if l.strip() and not l.strip().startswith("#")]
    d: dict = {"from": [], "run": []}
    for l in lines:
        instr, _, rest = l.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            d["from"].append(rest)
        elif instr == "RUN":
            d["run"].append(rest)
        elif instr in ("ENTRYPOINT", "CMD", "VOLUME"):
            d[instr.lower()] = json.loads(rest)
        elif instr in ("EXPOSE", "USER", "ARG", "STOPSIGNAL"):
            d.setdefault(instr.lower(), []).append(rest)
        elif instr == "HEALTHCHECK":
            m = re.search(r"CMD (\[.*\])$", rest)
            d["healthcheck"] = json.loads(m.group(1)) if m else rest
    d["comments"] = [l.lstrip("# ").strip() for l in text.splitlines() if l.startswith("#")]
    return d


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                cmds.append(line)
    return cmds


def check_dockerfile(facts: Facts) -> str:
    text = (ROOT / "Dockerfile").read_text()
    d = dockerfile_facts(text)
    readme = readme_commands()
    # 1. The build command is the README's.
    builds = [c for c in readme if c.startswith("cargo build")]
    check(len(builds) == 1, f"README.md has {len(builds)} `cargo build` commands, expected 1")
    run_cmds = []
    for r in d["run"]:
        for part in r.split("&&"):
            words = shlex.split(part)
            while words and words[0].startswith("--"):  # RUN options: --mount=…, --network=…
                words.pop(0)
            run_cmds.append(" ".join(words))
    check(builds[0] in run_cmds, f"Dockerfile does not RUN exactly the README's `{builds[0]}` (it runs {run_cmds})")
    # 2. docker build / docker run in the README are the ones the Dockerfile documents.
    docker = [c for c in readme if c.startswith("docker ")]
    for verb in ("docker build", "docker run"):
        cmd = [c for c in docker if c.startswith(verb)]
        check(len(cmd) == 1, f"README.md has {len(cmd)} `{verb}` commands, expected 1")
        check(cmd[0] in d["comments"], f"Dockerfile's header does not show the README's `{cmd[0]}`")
    # 3. What the image runs = what the README says it runs, with real flags.
    argv = ["quiver"] + d["cmd"]
    check(d["entrypoint"][0].endswith("/quiver"), f"ENTRYPOINT {d['entrypoint']} is not the quiver binary")
    check_quiver_args(facts, d["cmd"], "Dockerfile CMD")
    said = re.search(r"The image runs `([^`]+)`", (ROOT / "README.md").read_text())
    check(said is not None, "README.md does not say what the image runs (`The image runs `…``)")
    check(said.group(1) == " ".join(argv), f"README says the image runs `{said.group(1)}`, the Dockerfile runs `{' '.join(argv)}`")
    args = dict(zip(d["cmd"][1::2], d["cmd"][2::2]))
    port = listen_port(args["--listen"])
    check(args["--listen"].startswith("0.0.0.0:"), "the image must listen on 0.0.0.0")
    check(args["--data-dir"] == "/data" and d["volume"] == ["/data"], "data dir and VOLUME must both be /data")
    check(d["expose"] == [str(port)], f"EXPOSE {d['expose']} is not the listen port {port}")
    check(port == facts.default_port, f"listen port {port} differs from Quiver's default {facts.default_port}")
    run_cmd = shlex.split([c for c in docker if c.startswith("docker run")][0])
    p = run_cmd[run_cmd.index("-p") + 1]
    v = run_cmd[run_cmd.index("-v") + 1]
    check(p.rsplit(":", 1)[1] == str(port), f"README's docker run publishes {p}, the image listens on {port}")
    check(v.split(":")[1] == "/data", f"README's docker run mounts {v}, not on /data")
    # 4. Health check on /-/healthy at the listen port, with a program the runtime base has.
    hc = " ".join(d["healthcheck"])
    check("/-/healthy" in hc and f"/{port}" in hc, f"HEALTHCHECK does not probe /-/healthy on {port}: {hc}")
    runtime = d["from"][-1]
    check("slim" in runtime and d["healthcheck"][0] == "bash",
          "HEALTHCHECK uses bash: the runtime base must be a Debian slim image (has bash)")
    # 5. Non-root, numeric user; toolchain at least Cargo.toml's rust-version.
    user = d["user"][-1].split(":")[0]
    check(user.isdigit() and int(user) != 0, f"USER {user} must be a numeric non-root id")
    rust = next(a for a in d["arg"] if a.startswith("RUST_VERSION=")).split("=", 1)[1]
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    check(as_tuple(rust)[:2] >= as_tuple(facts.rust_version)[:2],
          f"RUST_VERSION {rust} is older than Cargo.toml's rust-version {facts.rust_version}")
    check(d["from"][0].startswith("rust:${RUST_VERSION}"), "the build stage must use rust:${RUST_VERSION}")
    # 6. .dockerignore keeps what the build needs.
    ignored = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")}
    for needed in ("src", "Cargo.toml", "Cargo.lock", "sql", "migrations", "benches"):
        check(needed not in ignored, f".dockerignore excludes {needed}, which the build reads")
    check("target" in ignored and ".git" in ignored, ".dockerignore must exclude target and .git")
    extra = ""
    if shutil.which("hadolint"):
        r = run(["hadolint", str(ROOT / "Dockerfile")])
        check(r.returncode == 0, "hadolint:\n" + r.stdout + r.stderr)
        extra = "; hadolint clean"
    return (f"README `{builds[0]}` = Dockerfile RUN; README docker build/run = Dockerfile header; "
            f"image runs `{' '.join(argv)}`; EXPOSE/HEALTHCHECK/-p on {port}; USER {user}; "
            f"rust {rust} >= {facts.rust_version}{extra}")


def kustomize_build(base: Path = K8S) -> tuple[str, str]:
    """The assembled base (or overlay), and how it was assembled."""
    if shutil.which("kustomize"):
        r = run(["kustomize", "build", str(base)])
        check(r.returncode == 0, "kustomize build:\n" + r.stderr)
        return r.stdout, "kustomize build"
    if shutil.which("kubectl"):
        r = run(["kubectl", "kustomize", str(base)])
        check(r.returncode == 0, "kubectl kustomize:\n" + r.stderr)
        return r.stdout, "kubectl kustomize"
    # Same assembly for what these bases use: resources, configMapGenerator, images, labels.
    k = load_yaml_all((base / "kustomization.yaml").read_text())[0]
    docs = []
    for res in k.get("resources", []):
        docs += load_yaml_all((base / res).read_text())
    for gen in k.get("configMapGenerator", []):
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
                     "data": {Path(f).name: (base / f).read_text() for f in gen.get("files", [])}})
    labels = {}
    for l in k.get("labels", []):
        labels.update(l.get("pairs", {}))
    for d in docs:
        d["metadata"].setdefault("labels", {}).update(labels)
    return yaml.safe_dump_all(docs), "built-in assembly (no kustomize/kubectl)"


def kubernetes_validate(text: str, *extra: Path) -> list[str]:
    """kubernetes-validate --strict on the assembled objects and the example Secrets, against
    each of K8S_VERSIONS; the versions checked."""
    kv = tool("kubernetes-validate")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        assembled = Path(tmp) / "assembled.yaml"
        assembled.write_text(text)
        for version in K8S_VERSIONS:
            cmd = [kv, "--strict", "--quiet"] + (["-k", version] if version else [])
            r = run(cmd + [str(assembled)] + [str(e) for e in extra])
            check(r.returncode == 0, f"kubernetes-validate --strict {version or ''}:\n{r.stdout}{r.stderr}")
            out.append(version or "newest schema")
    return out


def secret_keys(*examples: Path) -> dict[str, set[str]]:
    """Secret name -> its keys, from the example Secrets."""
    out = {}
    for f in examples:
        for d in load_yaml_all(f.read_text()):
            out[d["metadata"]["name"]] = set(d.get("stringData", {})) | set(d.get("data", {}))
    return out


def pod_env(c: dict, facts: Facts, where: str, secrets: dict[str, set[str]]) -> dict[str, str]:
    """A container's variables as name -> value (`secret:NAME/KEY`, `field:PATH` for
    references). QUIVER_* names must be known to the code; other names only carry the
    downward API into QUIVER_* values as $(NAME), which needs them defined earlier."""
    env: dict[str, str] = {}
    for e in c.get("env", []):
        name, ref = e["name"], e.get("valueFrom", {})
        if "secretKeyRef" in ref:
            s = ref["secretKeyRef"]
            check(s["name"] in secrets, f"{where}: {name} reads Secret {s['name']}, which no example Secret defines")
            check(s["key"] in secrets[s["name"]], f"{where}: secret key {s['key']} is not in the example Secret {s['name']}")
            value = f"secret:{s['name']}/{s['key']}"
        elif "fieldRef" in ref:
            value = f"field:{ref['fieldRef']['fieldPath']}"
        else:
            value = str(e.get("value", ""))
            for var in re.findall(r"\$\((\w+)\)", value):
                check(var in env, f"{where}: {name} uses $({var}), which is not defined before it")
        if name.startswith("QUIVER_"):
            check(name in facts.env, f"{where}: unknown variable {name} (not in src/config.rs / main.rs)")
        else:
            check(value.startswith("field:"), f"{where}: variable {name} is neither a QUIVER_* setting nor the downward API")
        env[name] = value
    return env


def check_quiver_pod(facts: Facts, where: str, template: dict, cfg: dict, routes: set[str] | None,
                     secrets: dict[str, set[str]]) -> tuple[dict, dict[str, str]]:
    """What every Quiver pod of the kit must have: the config's port, the config mounted, known
    flags and variables, probes on real routes, a locked-down security context, resources,
    a grace period above Quiver's, scrape annotations. The container and its variables."""
    spec = template["spec"]
    c = next((x for x in spec["containers"] if x["name"] == "quiver"), spec["containers"][0])
    port = listen_port(cfg["listen"])
    check(c["ports"][0]["containerPort"] == port, f"{where}: containerPort is not the config's port {port}")
    port_names = {p.get("name") for p in c["ports"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    check("/tmp" in mounts, f"{where}: no writable /tmp (DataFusion spills) under a read-only root filesystem")
    conf_arg = c["args"][c["args"].index("--config") + 1]
    check(str(Path(conf_arg).parent) in mounts, f"{where}: --config is not in the mounted ConfigMap")
    check_quiver_args(facts, c["args"], f"{where} args")
    env = pod_env(c, facts, where, secrets)
    # Probes: liveness /-/healthy, readiness /-/ready, on the container's port, and routes the
    # process serves (a cluster role serves part of the routes).
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        g = c[probe]["httpGet"]
        check(g["path"] == path, f"{where}: {probe} is {g['path']}, not {path}")
        check(routes is None or path in routes, f"{where}: {path} is not a route this role serves")
        check(g["port"] in (port, *port_names), f"{where}: {probe} port {g['port']} is not the container's")
    psc, csc = spec["securityContext"], c["securityContext"]
    check(psc.get("runAsNonRoot") and psc.get("runAsUser", 0) != 0, f"{where}: pod must run as non-root")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile must be RuntimeDefault")
    check(csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    check(csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities must drop ALL")
    dockerfile_user = dockerfile_facts((ROOT / "Dockerfile").read_text())["user"][-1].split(":")[0]
    check(str(psc["runAsUser"]) == dockerfile_user, f"{where}: runAsUser {psc['runAsUser']} is not the image's USER {dockerfile_user}")
    res = c["resources"]
    check({"requests", "limits"} <= set(res) and "memory" in res["limits"] and "memory" in res["requests"],
          f"{where}: requests and a memory limit are required")
    grace = duration_s(cfg.get("shutdown_grace_period", f"{facts.default_grace_s}s"))
    check(spec["terminationGracePeriodSeconds"] > grace,
          f"{where}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} must exceed the shutdown grace period {grace:g}s")
    ann = template["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(port)
          and ann.get("prometheus.io/path") == "/metrics", f"{where}: scrape annotations wrong: {ann}")
    check(routes is None or "/metrics" in routes, f"{where}: /metrics is not a route this role serves")
    return c, env


def check_kubernetes(facts: Facts) -> str:
    text, how = kustomize_build()
    docs = load_yaml_all(text)
    out = kubernetes_validate(text, K8S / "secret-s3.example.yaml")
    kinds = {d["kind"]: d for d in docs}
    for kind in ("StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount"):
        check(kind in kinds, f"the base has no {kind}")
    sts = kinds["StatefulSet"]
    pod = sts["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    # Selectors of the Services and the PDB select the pod.
    for d in docs:
        sel = d.get("spec", {}).get("selector")
        if d["kind"] == "PodDisruptionBudget":
            sel = sel["matchLabels"]
        if d["kind"] in ("Service", "PodDisruptionBudget"):
            check(all(labels.get(k) == v for k, v in sel.items()), f"{d['kind']} {d['metadata']['name']} selects {sel}, not the pod {labels}")
    # Config: the ConfigMap's TOML is the file, with known keys; port and data dir agree.
    cm = kinds["ConfigMap"]
    cfg = check_toml(facts, K8S / "quiver.toml")
    check(cm["data"]["quiver.toml"] == (K8S / "quiver.toml").read_text(), "ConfigMap differs from quiver.toml")
    # Port, config mount, flags, probes, variables and secret keys, security context,
    # resources, grace period, scrape annotations.
    c, _ = check_quiver_pod(facts, "StatefulSet", pod, cfg, None, secret_keys(K8S / "secret-s3.example.yaml"))
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    check(cfg["storage"]["data_dir"] in mounts, "the data dir is not a mounted volume")
    check(any(t["metadata"]["name"] == mounts[cfg["storage"]["data_dir"]]["name"] for t in sts["spec"]["volumeClaimTemplates"]),
          "the data dir is not on a PersistentVolumeClaim")
    check(not any(d["kind"] == "Secret" for d in docs), "the base must not contain a Secret")
    grace = duration_s(cfg.get("shutdown_grace_period", f"{facts.default_grace_s}s"))
    return (f"{how}: {len(docs)} objects ({', '.join(sorted(kinds))}) + secret-s3.example.yaml; "
            f"kubernetes-validate --strict against {', '.join(out)}; probes, securityContext, "
            f"resources, grace {spec['terminationGracePeriodSeconds']}s > {grace:g}s, selectors, annotations, "
            f"variables and secret keys consistent")


def compose_config(file: str = "compose.yaml") -> tuple[dict, str]:
    env = COMPOSE / ".env.example"
    base = ["-f", str(COMPOSE / file), "--env-file", str(env)]
    attempts = []
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        attempts.append(["docker", "compose"] + base + ["config"])
    if shutil.which("docker-compose"):
        # docker-compose 1.x takes --env-file before the subcommand too.
        attempts.append(["docker-compose"] + base + ["config"])
    errors = []
    for cmd in attempts:
        r = run(cmd, cwd=COMPOSE)
        if r.returncode == 0:
            return yaml.safe_load(r.stdout), " ".join(cmd[:2] if cmd[0] == "docker" else cmd[:1]) + " config"
        errors.append(f"{' '.join(cmd)}:\n{r.stderr}")
    check(not errors, "\n".join(errors))
    # No compose tool (PyPI's docker-compose 1.29 does not install on Python 3.11: its
    # PyYAML<6 pin fails to build). Interpolate as compose does — ${VAR}, ${VAR:-default},
    # ${VAR:?error}, $$ — from .env.example, then only the structural checks below run.
    values = {}
    for line in env.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()

    def interpolate(m):
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        if values.get(name):
            return values[name]
        check(op != ":?", f"{file}: {name} is required ({arg}) and .env.example does not set it")
        return arg if op == ":-" else ""

    text = re.sub(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}|\$(\w+)", interpolate, (COMPOSE / file).read_text())
    doc = yaml.safe_load(text)
    # Extension fields (x-*) hold YAML anchors only; compose drops them.
    doc = {k: v for k, v in doc.items() if not k.startswith("x-")}
    for name, svc in doc["services"].items():
        check("image" in svc or "build" in svc, f"service {name} has neither image nor build")
        deps = svc.get("depends_on", {})
        for dep in deps:
            check(dep in doc["services"], f"service {name} depends on unknown service {dep}")
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                check(src in doc.get("volumes", {}), f"service {name} uses undeclared volume {src}")
            else:
                v_abs = (COMPOSE / src).resolve()
                svc["volumes"] = [x if x != v else f"{v_abs}:{':'.join(v.split(':')[1:])}" for x in svc["volumes"]]
    return doc, "structural check with PyYAML (no docker compose / docker-compose installed)"


def check_compose(facts: Facts) -> str:
    rendered, how = compose_config()
    svcs = rendered["services"]
    for s in ("minio", "createbucket", "quiver", "prometheus", "grafana", "node-exporter"):
        check(s in svcs, f"compose has no service {s}")
    q = svcs["quiver"]
    cmd = q["command"] if isinstance(q["command"], list) else shlex.split(q["command"])
    check_quiver_args(facts, cmd, "compose quiver command")
    cfg = check_toml(facts, COMPOSE / "quiver.toml")
    env = q.get("environment", {})
    for k in env:
        check(k in facts.env, f"compose quiver: unknown variable {k}")
    check(env.get("QUIVER_STORAGE_URL", cfg["storage"].get("url", "")).startswith("s3://"), "blocks are not on S3")
    check(cfg["storage"]["s3"]["endpoint"].startswith("http://minio:"), "S3 endpoint is not the minio service")
    for cred in ("QUIVER_S3_ACCESS_KEY_ID", "QUIVER_S3_SECRET_ACCESS_KEY"):
        check(env.get(cred), f"{cred} is not set from .env")
    dep = q.get("depends_on", {})
    check(dep.get("createbucket", {}).get("condition") == "service_completed_successfully",
          "quiver must wait for the bucket (createbucket completed)")
    port = listen_port(cfg["listen"])
    # Prometheus: scrapes itself, Quiver's /metrics and a demo target; remote-writes to Quiver.
    prom_cfg = load_yaml_all((COMPOSE / "prometheus.yml").read_text())[0]
    targets = {sc["job_name"]: [t for s in sc["static_configs"] for t in s["targets"]] for sc in prom_cfg["scrape_configs"]}
    check(f"quiver:{port}" in targets.get("quiver", []), f"Prometheus does not scrape quiver:{port}")
    check(any("node-exporter" in t for t in targets.get("node", [])), "no demo target scraped")
    check("prometheus" in targets, "Prometheus does not scrape itself")
    check(prom_cfg["remote_write"][0]["url"] == f"http://quiver:{port}/api/v1/write", "remote_write is not Quiver's /api/v1/write")
    promtool = tool("promtool")
    r = run([promtool, "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")])
    check(r.returncode == 0, "promtool check config:\n" + r.stdout + r.stderr)
    # Every bind-mounted file or directory exists; the rules file is the repository's.
    mounts = []
    for name, s in svcs.items():
        for v in s.get("volumes", []):
            if isinstance(v, dict):
                src, dst, typ = v.get("source"), v.get("target"), v.get("type")
            else:
                parts = v.split(":")
                src, dst = parts[0], parts[1]
                typ = "bind" if src.startswith(("/", ".")) else "volume"
            if typ == "bind":
                check(Path(src).exists(), f"{name}: bind mount source {src} does not exist")
                mounts.append((name, Path(src).resolve(), dst))
    check(("prometheus", (DEPLOY / "quiver-alerts.yml").resolve(), "/etc/prometheus/rules/quiver-alerts.yml") in mounts,
          "Prometheus does not load deploy/quiver-alerts.yml")
    check(prom_cfg["rule_files"] == ["/etc/prometheus/rules/quiver-alerts.yml"], "rule_files path differs from the mount")
    # Grafana: provisioning and dashboards from deploy/grafana, at the provider's path.
    gm = {m[1]: m[2] for m in mounts if m[0] == "grafana"}
    check(gm.get((GRAFANA / "provisioning").resolve()) == "/etc/grafana/provisioning", "Grafana provisioning not mounted")
    provider = load_yaml_all((GRAFANA / "provisioning/dashboards/quiver.yaml").read_text())[0]
    check(gm.get((GRAFANA / "dashboards").resolve()) == provider["providers"][0]["options"]["path"],
          "dashboards are not mounted at the provider's path")
    ds = load_yaml_all((GRAFANA / "provisioning/datasources/quiver.yaml").read_text())[0]["datasources"]
    quiver_ds = [d for d in ds if d["uid"] == "quiver"]
    check(quiver_ds and quiver_ds[0]["url"] == f"http://quiver:{port}", "the Quiver data source does not point to quiver:" + str(port))
    # Secrets only in the env file; published ports on loopback.
    text = (COMPOSE / "compose.yaml").read_text()
    check("change-me" not in text, "a secret value is written in compose.yaml")
    for name, s in svcs.items():
        for p in s.get("ports", []):
            host_ip = p.get("host_ip") if isinstance(p, dict) else p.split(":")[0]
            check(host_ip == "127.0.0.1", f"{name} publishes {p} beyond 127.0.0.1")
    grace = duration_s(cfg.get("shutdown_grace_period", f"{facts.default_grace_s}s"))
    stop = q.get("stop_grace_period", "10s")
    check(duration_s(stop) > grace, f"quiver stop_grace_period {stop} must exceed the shutdown grace {grace:g}s")
    return (f"{how} with .env.example: {len(svcs)} services; quiver on s3:// via MinIO after createbucket; "
            f"Prometheus scrapes {sorted(targets)} and remote-writes to quiver:{port}/api/v1/write "
            f"(promtool check config --syntax-only); bind mounts exist; Grafana provisioning wired; "
            f"ports on 127.0.0.1; stop_grace_period {stop} > {grace:g}s")


# ------------------------------------------------------------------ cluster shapes

CLUSTER_ROLES = ("writer", "distributor", "querier", "compactor")


def role_routes() -> dict[str, set[str]]:
    """Paths each cluster role serves, read from src/cluster/<role>.rs: its own `.route("…")`
    lines, the operational routes of src/cluster/mod.rs when it merges `ops_routes`, and,
    for a role that serves part of the API (`router_with(…, |r| r.need != Need::Needs(
    Permission::X))`), the routes of src/api/routes.rs's table that the filter keeps."""
    cluster = ROOT / "src/cluster"
    check((cluster / "mod.rs").exists(), "src/cluster/mod.rs not found: the sources have no cluster roles")
    ops_fn = re.search(r"pub fn ops_routes.*?\n\}", (cluster / "mod.rs").read_text(), re.S)
    check(ops_fn is not None, "ops_routes not found in src/cluster/mod.rs")
    # Routes are `.route("path", …)` calls or `RoleRoute { path: "…", … }` entries.
    route_re = r'(?:\.route\(\s*|\bpath:\s*)"([^"]+)"'
    ops = set(re.findall(route_re, ops_fn.group(0)))
    table = re.findall(r'route\(\s*"([^"]+)",\s*\w+,\s*(READ|WRITE|ADMIN|Need::Open)\b',
                       (ROOT / "src/api/routes.rs").read_text())
    check(len(table) > 10, f"only {len(table)} routes found in src/api/routes.rs")
    perm = {"READ": "Read", "WRITE": "Write", "ADMIN": "Admin", "Need::Open": None}
    out = {}
    for role in CLUSTER_ROLES:
        f = cluster / f"{role}.rs"
        check(f.exists(), f"{f.relative_to(ROOT)} not found")
        src = f.read_text()
        paths = set(re.findall(route_re, src))
        if "ops_routes(" in src:
            paths |= ops
        if "router_with(" in src:
            m = re.search(r"router_with\([^|]*\|\s*\w+\s*\|\s*\{?\s*\w+\.need\s*(!=|==)\s*"
                          r"Need::Needs\(Permission::(\w+)\)", src)
            check(m is not None, f"{f.relative_to(ROOT)}: cannot read which API routes router_with keeps")
            op, p = m.groups()
            paths |= {path for path, need in table if (perm[need] != p) == (op == "!=")}
        check(paths, f"{f.relative_to(ROOT)}: no routes found")
        out[role] = paths
    return out


def arg_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def effective(facts: Facts, flag: str, args: list[str], env: dict, cfg: dict) -> str | None:
    """A setting as a node gets it: its flag, else its variable, else the config file, else
    the default in src/config.rs."""
    s = facts.settings[flag]
    v = arg_value(args, flag)
    if v is None and s["env"] in env:
        v = env[s["env"]]
    if v is None:
        table = cfg
        for part in filter(None, s["section"].split(".")):
            table = table.get(part, {})
        v = table.get(s["key"])
    if v is None:
        v = s["default"]
    return None if v is None else str(v)


def check_cluster_nodes(facts: Facts, nodes: list[dict], routes: dict[str, set[str]]) -> dict[str, list[dict]]:
    """Each node: where, args, env (name -> value), cfg (its TOML). Every role is present,
    and every node agrees on what must be one value in a cluster: the bucket URL (s3://),
    the shard count, the lease and intervals, the HA labels and the cluster secret (set).
    Writers advertise distinct URLs on the listen port. Nodes by role."""
    by_role: dict[str, list[dict]] = {r: [] for r in CLUSTER_ROLES}
    shared = ["--storage-url", "--cluster-shards"] + sorted(
        f for f, s in facts.settings.items()
        if s["section"] == "cluster" and f not in ("--role", "--cluster-advertise-url", "--cluster-node-id"))
    values: dict[str, dict[str, str]] = {f: {} for f in shared}
    for n in nodes:
        w = n["where"]
        check_quiver_args(facts, n["args"], w)
        for k in n["env"]:
            if k.startswith("QUIVER_"):
                check(k in facts.env, f"{w}: unknown variable {k}")
        role = (effective(facts, "--role", n["args"], n["env"], n["cfg"]) or "").split("::")[-1].lower()
        check(role in facts.roles, f"{w}: role {role!r} is not one of {sorted(facts.roles)}")
        check(role in CLUSTER_ROLES, f"{w}: role {role!r} is not a cluster role")
        n["role"] = role
        n["port"] = listen_port(effective(facts, "--listen", n["args"], n["env"], n["cfg"]))
        n["advertise"] = effective(facts, "--cluster-advertise-url", n["args"], n["env"], n["cfg"])
        n["node_id"] = effective(facts, "--cluster-node-id", n["args"], n["env"], n["cfg"])
        for f in shared:
            values[f][w] = effective(facts, f, n["args"], n["env"], n["cfg"])
        by_role[role].append(n)
    for role, ns in by_role.items():
        check(ns, f"no {role} (every role is needed: writer, distributor, querier, compactor)")
    for f, per in values.items():
        distinct = set(per.values())
        check(len(distinct) == 1, f"nodes disagree on {f}: " + ", ".join(f"{w}={v}" for w, v in per.items()))
    url = next(iter(values["--storage-url"].values()))
    check(url is not None and url.startswith("s3://"), f"the storage URL {url} is not s3:// (a cluster needs S3)")
    shards = next(iter(values["--cluster-shards"].values()))
    check(shards is not None and shards.isdigit() and int(shards) >= 1, f"bad shard count {shards}")
    check(next(iter(values["--cluster-secret"].values())) is not None, "no cluster secret (QUIVER_CLUSTER_SECRET)")
    for n in by_role["writer"]:
        a = n["advertise"]
        check(a is not None, f"{n['where']}: a writer needs --cluster-advertise-url (other nodes call it there)")
        u = urllib.parse.urlsplit(a)
        check(u.scheme == "http" and u.port == n["port"] and u.path in ("", "/"),
              f"{n['where']}: advertise URL {a} is not http:// on the listen port {n['port']}")
    adv = [n["advertise"] for n in by_role["writer"]]
    check(len(set(adv)) == len(adv), f"writers advertise the same URL: {adv}")
    ids = [n["node_id"] for n in nodes if n["node_id"] and "$(" not in n["node_id"]]
    check(len(set(ids)) == len(ids), f"node ids repeat: {ids}")
    for role, ns in by_role.items():
        for path in ("/-/healthy", "/-/ready", "/metrics"):
            check(path in routes[role], f"the {role} role does not serve {path} (src/cluster/{role}.rs)")
    return by_role


def cluster_summary(by_role: dict[str, list[dict]], facts: Facts) -> str:
    n0 = by_role["writer"][0]
    count = {k: sum(n.get("replicas", 1) for n in v) for k, v in by_role.items()}
    return (", ".join(f"{c} {k}{'s' if c != 1 else ''}" for k, c in count.items())
            + f"; one bucket URL {effective(facts, '--storage-url', n0['args'], n0['env'], n0['cfg'])}, "
            f"{effective(facts, '--cluster-shards', n0['args'], n0['env'], n0['cfg'])} shards, one lease, "
            f"intervals and cluster secret on every node; writers advertise distinct URLs on port {n0['port']}")


def check_kubernetes_cluster(facts: Facts) -> str:
    routes = role_routes()
    text, how = kustomize_build(K8S_CLUSTER)
    docs = load_yaml_all(text)
    examples = (K8S / "secret-s3.example.yaml", K8S_CLUSTER / "secret-cluster.example.yaml")
    versions = kubernetes_validate(text, *examples)
    secrets = secret_keys(*examples)
    check(not any(d["kind"] == "Secret" for d in docs), "the cluster base must not contain a Secret")
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    accounts = {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])}
    workloads = by_kind.get("StatefulSet", []) + by_kind.get("Deployment", [])
    nodes = []
    for wl in workloads:
        where = f"{wl['kind']} {wl['metadata']['name']}"
        tmpl = wl["spec"]["template"]
        sel = wl["spec"]["selector"]["matchLabels"]
        check(all(tmpl["metadata"]["labels"].get(k) == v for k, v in sel.items()), f"{where}: selector does not select its pods")
        check(tmpl["spec"].get("serviceAccountName") in accounts, f"{where}: its ServiceAccount is not in the base")
        # The config: the mounted ConfigMap, which is the directory's quiver.toml.
        c0 = tmpl["spec"]["containers"][0]
        conf_dir = str(Path(c0["args"][c0["args"].index("--config") + 1]).parent)
        vol = next(m["name"] for m in c0["volumeMounts"] if m["mountPath"] == conf_dir)
        cm_name = next(v["configMap"]["name"] for v in tmpl["spec"]["volumes"] if v["name"] == vol)
        check(cm_name in configmaps, f"{where}: ConfigMap {cm_name} is not in the base")
        check(configmaps[cm_name]["data"]["quiver.toml"] == (K8S_CLUSTER / "quiver.toml").read_text(),
              f"{where}: ConfigMap {cm_name} differs from cluster/quiver.toml")
        cfg = check_toml(facts, K8S_CLUSTER / "quiver.toml")
        role = (arg_value(c0["args"], "--role") or "").lower()
        c, env = check_quiver_pod(facts, where, tmpl, cfg, routes.get(role), secrets)
        nodes.append({"where": where, "args": c["args"], "env": env, "cfg": cfg, "wl": wl,
                      "replicas": wl["spec"].get("replicas", 1)})
    by_role = check_cluster_nodes(facts, nodes, routes)
    services = by_kind.get("Service", [])

    def selected(svc_or_pdb: dict) -> list[dict]:
        sel = svc_or_pdb["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        return [n for n in nodes if all(n["wl"]["spec"]["template"]["metadata"]["labels"].get(k) == v
                                         for k, v in sel.items())]

    for s in services:
        picked = selected(s)
        check(picked, f"Service {s['metadata']['name']} selects no Quiver pod")
        check(len({n["role"] for n in picked}) == 1, f"Service {s['metadata']['name']} selects several roles")
        for p in s["spec"]["ports"]:
            for n in picked:
                c = n["wl"]["spec"]["template"]["spec"]["containers"][0]
                names = {cp.get("name"): cp["containerPort"] for cp in c["ports"]}
                target = names.get(p["targetPort"], p["targetPort"])
                check(target == n["port"], f"Service {s['metadata']['name']} targets {p['targetPort']}, not the listen port {n['port']}")
    # Writers: a StatefulSet whose headless governing Service gives each pod the DNS name
    # it advertises: http://$(POD_NAME).<service>.$(POD_NAMESPACE).svc:<port>.
    for n in by_role["writer"]:
        wl = n["wl"]
        check(wl["kind"] == "StatefulSet", f"{n['where']}: writers need stable names (a StatefulSet)")
        svc = next((s for s in services if s["metadata"]["name"] == wl["spec"]["serviceName"]), None)
        check(svc is not None, f"{n['where']}: its serviceName {wl['spec']['serviceName']} is not a Service of the base")
        check(svc["spec"].get("clusterIP") == "None", f"Service {svc['metadata']['name']}: the writers' governing Service must be headless")
        check(n in selected(svc), f"Service {svc['metadata']['name']} does not select the writers")
        m = re.fullmatch(r"http://\$\((\w+)\)\.([a-z0-9-]+)\.\$\((\w+)\)\.svc(?:\.cluster\.local)?:(\d+)", n["advertise"])
        check(m is not None, f"{n['where']}: advertise URL {n['advertise']} is not http://$(POD_NAME).<service>.$(POD_NAMESPACE).svc:<port>")
        check(n["env"].get(m.group(1)) == "field:metadata.name", f"{n['where']}: $({m.group(1)}) is not the pod's name (fieldRef metadata.name)")
        check(n["env"].get(m.group(3)) == "field:metadata.namespace", f"{n['where']}: $({m.group(3)}) is not the namespace (fieldRef metadata.namespace)")
        check(m.group(2) == svc["metadata"]["name"], f"{n['where']}: advertise URL names Service {m.group(2)}, not {svc['metadata']['name']}")
    # The APIs: a ClusterIP Service in front of the distributors and of the queriers.
    for role, path in (("distributor", "/api/v1/write"), ("querier", "/api/v1/query")):
        check(path in routes[role], f"the {role} role does not serve {path}")
        for n in by_role[role]:
            check(n["wl"]["kind"] == "Deployment", f"{n['where']}: a {role} is stateless (a Deployment)")
            check(any(n in selected(s) and s["spec"].get("clusterIP") != "None" for s in services),
                  f"{n['where']}: no Service in front of the {role}s")
    for n in by_role["compactor"]:
        check(n["wl"]["kind"] == "Deployment", f"{n['where']}: the compactor is stateless (a Deployment)")
    # Disruption budgets for the roles that serve traffic; each selects pods.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    for p in pdbs:
        check(selected(p), f"PodDisruptionBudget {p['metadata']['name']} selects no Quiver pod")
    for role in ("writer", "distributor", "querier"):
        check(any(n in selected(p) for p in pdbs for n in by_role[role]), f"no PodDisruptionBudget covers the {role}s")
    return (f"{how} {K8S_CLUSTER.relative_to(ROOT)}: {len(docs)} objects ("
            + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
            + f") + the example Secrets; kubernetes-validate --strict against {', '.join(versions)}; "
            + cluster_summary(by_role, facts)
            + " ($(POD_NAME).<headless Service>.$(POD_NAMESPACE), downward API); probes on routes each role "
            "serves; Services, PDBs and selectors; securityContext, resources, grace, annotations, variables "
            "and secret keys")


def compose_names(svcs: dict) -> dict[str, set[str]]:
    """Host name on the compose network -> services answering to it (name and aliases)."""
    out: dict[str, set[str]] = {}
    for name, s in svcs.items():
        out.setdefault(name, set()).add(name)
        nets = s.get("networks") or {}
        for net in (nets.values() if isinstance(nets, dict) else []):
            for alias in (net or {}).get("aliases", []):
                out.setdefault(alias, set()).add(name)
    return out


def bind_mounts(svcs: dict) -> list[tuple[str, Path, str]]:
    """(service, source, target) of every bind mount; each source must exist."""
    mounts = []
    for name, s in svcs.items():
        for v in s.get("volumes", []):
            if isinstance(v, dict):
                src, dst, typ = v.get("source"), v.get("target"), v.get("type")
            else:
                parts = v.split(":")
                src, dst = parts[0], parts[1]
                typ = "bind" if src.startswith(("/", ".")) else "volume"
            if typ == "bind":
                check(Path(src).exists(), f"{name}: bind mount source {src} does not exist")
                mounts.append((name, Path(src).resolve(), dst))
    return mounts


def check_compose_cluster(facts: Facts) -> str:
    routes = role_routes()
    rendered, how = compose_config("cluster.yaml")
    svcs = rendered["services"]
    for s in ("minio", "createbucket", "prometheus", "grafana", "node-exporter"):
        check(s in svcs, f"cluster.yaml has no service {s}")
    check(svcs["minio"]["image"].startswith("minio/minio:"), "the S3 server is not MinIO (conditional writes)")
    mounts = bind_mounts(svcs)
    names = compose_names(svcs)
    nodes = []
    for name, s in svcs.items():
        cmd = s.get("command")
        cmd = shlex.split(cmd) if isinstance(cmd, str) else (cmd or [])
        if cmd[:1] != ["serve"]:
            continue
        where = f"cluster.yaml {name}"
        conf = arg_value(cmd, "--config")
        check(conf is not None, f"{where}: no --config")
        src = next((m[1] for m in mounts if m[0] == name and m[2] == conf), None)
        check(src == (COMPOSE / "cluster.toml").resolve(), f"{where}: --config {conf} is not cluster.toml mounted")
        cfg = check_toml(facts, src)
        env = {k: str(v) for k, v in (s.get("environment") or {}).items()}
        nodes.append({"where": where, "name": name, "args": cmd, "env": env, "cfg": cfg, "svc": s})
    by_role = check_cluster_nodes(facts, nodes, routes)
    grace = duration_s(nodes[0]["cfg"].get("shutdown_grace_period", f"{facts.default_grace_s}s"))
    for n in nodes:
        s, w = n["svc"], n["where"]
        dep = s.get("depends_on", {})
        check(dep.get("createbucket", {}).get("condition") == "service_completed_successfully",
              f"{w}: must wait for the bucket (createbucket completed)")
        hc = " ".join(s.get("healthcheck", {}).get("test", []))
        probed = re.search(r"GET (\S+) HTTP/", hc)
        check(probed is not None and probed.group(1) == "/-/ready" and f"/dev/tcp/127.0.0.1/{n['port']}" in hc,
              f"{w}: the healthcheck does not probe /-/ready on {n['port']}: {hc}")
        check(probed.group(1) in routes[n["role"]], f"{w}: the healthcheck's {probed.group(1)} is not a route of the {n['role']} role")
        stop = s.get("stop_grace_period", "10s")
        check(duration_s(stop) > grace, f"{w}: stop_grace_period {stop} must exceed the shutdown grace {grace:g}s")
        for p in s.get("ports", []):
            target = p.get("target") if isinstance(p, dict) else int(str(p).rsplit(":", 1)[1].split("/")[0])
            check(int(target) == n["port"], f"{w}: publishes container port {target}, not the listen port {n['port']}")
        for cred in ("QUIVER_S3_ACCESS_KEY_ID", "QUIVER_S3_SECRET_ACCESS_KEY"):
            check(n["env"].get(cred), f"{w}: {cred} is not set from .env")
        check(n["cfg"]["storage"]["s3"]["endpoint"].startswith("http://minio:"), f"{w}: S3 endpoint is not the minio service")
    # A writer's advertise URL names it on the compose network, and only it.
    for n in by_role["writer"]:
        host = urllib.parse.urlsplit(n["advertise"]).hostname
        check(names.get(host) == {n["name"]}, f"{n['where']}: advertise URL host {host} is not this service alone")
    for role in ("distributor", "querier"):
        check(any(n["svc"].get("ports") for n in by_role[role]), f"no {role} published on 127.0.0.1")

    def resolves_to(url: str, role: str, path: str, what: str):
        u = urllib.parse.urlsplit(url)
        targets = names.get(u.hostname, set())
        roles = {n["role"] for n in nodes if n["name"] in targets}
        check(targets and roles == {role} and len(targets) == len([n for n in nodes if n["name"] in targets]),
              f"{what} {url}: host {u.hostname} is not {role}s only ({sorted(targets)})")
        check(all(u.port == n["port"] for n in nodes if n["name"] in targets), f"{what} {url}: not the listen port")
        check(path in routes[role], f"{what} {url}: the {role} role does not serve {path}")
        return sorted(targets)

    # Prometheus: its config is prometheus-cluster.yml; scrapes every node; remote-writes to
    # the distributors.
    pm = {m[2]: m[1] for m in mounts if m[0] == "prometheus"}
    prom_file = pm.get("/etc/prometheus/prometheus.yml")
    check(prom_file == (COMPOSE / "prometheus-cluster.yml").resolve(), "Prometheus does not load prometheus-cluster.yml")
    prom_cfg = load_yaml_all(prom_file.read_text())[0]
    scraped = {}
    for sc in prom_cfg["scrape_configs"]:
        for sg in sc["static_configs"]:
            for tgt in sg["targets"]:
                scraped[tgt] = sc.get("metrics_path", "/metrics")
    for n in nodes:
        path = scraped.get(f"{n['name']}:{n['port']}")
        check(path is not None, f"Prometheus does not scrape {n['name']}:{n['port']}")
        check(path in routes[n["role"]], f"Prometheus scrapes {path} of {n['name']}, not a route of the {n['role']} role")
    for tgt in scraped:
        check(tgt.split(":")[0] in names or tgt.startswith("localhost:"), f"Prometheus scrapes {tgt}, not a service")
    rw = prom_cfg["remote_write"][0]["url"]
    writers_to = resolves_to(rw, "distributor", urllib.parse.urlsplit(rw).path, "remote_write")
    check(pm.get("/etc/prometheus/rules/quiver-alerts.yml") == (DEPLOY / "quiver-alerts.yml").resolve()
          and prom_cfg["rule_files"] == ["/etc/prometheus/rules/quiver-alerts.yml"], "Prometheus does not load deploy/quiver-alerts.yml")
    promtool = tool("promtool")
    r = run([promtool, "check", "config", "--syntax-only", str(prom_file)])
    check(r.returncode == 0, "promtool check config:\n" + r.stdout + r.stderr)
    # Grafana: the provisioned Quiver data source reaches the queriers.
    gm = {m[1]: m[2] for m in mounts if m[0] == "grafana"}
    check(gm.get((GRAFANA / "provisioning").resolve()) == "/etc/grafana/provisioning", "Grafana provisioning not mounted")
    provider = load_yaml_all((GRAFANA / "provisioning/dashboards/quiver.yaml").read_text())[0]
    check(gm.get((GRAFANA / "dashboards").resolve()) == provider["providers"][0]["options"]["path"],
          "dashboards are not mounted at the provider's path")
    ds = load_yaml_all((GRAFANA / "provisioning/datasources/quiver.yaml").read_text())[0]["datasources"]
    quiver_ds = [d for d in ds if d["uid"] == "quiver"]
    check(quiver_ds, "no Quiver data source provisioned")
    reads_from = resolves_to(quiver_ds[0]["url"], "querier", "/api/v1/query", "Grafana's Quiver data source")
    # Secrets only in the env file; published ports on loopback.
    check("change-me" not in (COMPOSE / "cluster.yaml").read_text(), "a secret value is written in cluster.yaml")
    for name, s in svcs.items():
        for p in s.get("ports", []):
            host_ip = p.get("host_ip") if isinstance(p, dict) else p.split(":")[0]
            check(host_ip == "127.0.0.1", f"{name} publishes {p} beyond 127.0.0.1")
    return (f"{how} with .env.example: {len(svcs)} services; " + cluster_summary(by_role, facts)
            + f" (each its own service); every node on cluster.toml, after createbucket, healthcheck on "
            f"/-/ready, stop_grace_period > {grace:g}s; Prometheus (prometheus-cluster.yml, promtool "
            f"--syntax-only) scrapes all {len(nodes)} nodes and remote-writes to {', '.join(writers_to)}; "
            f"Grafana's data source reads from {', '.join(reads_from)}; ports on 127.0.0.1")


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def check_systemd(facts: Facts) -> str:
    sa = tool("systemd-analyze")
    unit_text = (SYSTEMD / "quiver.service").read_text()
    s = unit_settings(unit_text)
    env = {}
    for line in (SYSTEMD / "quiver.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    for k in env:
        check(k in facts.env, f"quiver.env: unknown variable {k}")
    exec_start = shlex.split(s["ExecStart"][0])
    check_quiver_args(facts, exec_start[1:], "ExecStart")
    for key, want in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                      "ProtectHome": "yes", "Restart": "on-failure"}.items():
        check(s.get(key) == [want], f"{key}= must be {want}")
    check(s.get("User") and s["User"][0] not in ("root", "nobody"), "a dedicated User= is required")
    data_dir = env["QUIVER_DATA_DIR"]
    check(data_dir in " ".join(s.get("ReadWritePaths", [])).split(), f"ReadWritePaths= does not include the data dir {data_dir}")
    check(s.get("StateDirectory") == [Path(data_dir).name] and data_dir.startswith("/var/lib/"),
          "StateDirectory= must create the data dir")
    grace = duration_s(env.get("QUIVER_SHUTDOWN_GRACE_PERIOD", f"{facts.default_grace_s}s"))
    stop = duration_s(s["TimeoutStopSec"][0])
    check(stop > grace, f"TimeoutStopSec {stop:g}s must exceed the shutdown grace period {grace:g}s")
    # systemd-analyze verify insists that ExecStart's binary exists; it is not installed on
    # the checking machine, so a copy of the unit points ExecStart at a stub script. Nothing
    # else is changed and no message is filtered.
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "quiver"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        unit = Path(tmp) / "quiver.service"
        unit.write_text(unit_text.replace(f"ExecStart={exec_start[0]}", f"ExecStart={stub}"))
        r = run([sa, "verify", str(unit)])
        check(r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(),
              f"systemd-analyze verify:\n{r.stdout}{r.stderr}")
        r = run([sa, "security", "--offline=yes", "--threshold=30", "--no-pager", str(unit)])
        m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", r.stdout)
        check(r.returncode == 0 and m, f"systemd-analyze security (threshold 3.0):\n{r.stdout[-2000:]}{r.stderr}")
    return (f"systemd-analyze verify clean (ExecStart {exec_start[0]} swapped for a stub that exists); "
            f"exposure {m.group(1)} {m.group(2)} (systemd-analyze security --offline); "
            f"ReadWritePaths has {data_dir}; TimeoutStopSec {stop:g}s > grace {grace:g}s; hardening keys present")


def metric_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
    words = set(re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\)|$|\s|\[|,)", no_ranges))
    keywords = {"sum", "avg", "max", "min", "count", "by", "without", "rate", "increase", "irate", "topk",
                "bottomk", "histogram_quantile", "and", "or", "unless", "on", "ignoring", "group_left",
                "group_right", "offset", "bool", "label_values", "quantile", "stddev", "delta", "deriv",
                "abs", "clamp_min", "clamp_max", "time", "vector", "scalar", "label_replace", "absent"}
    labels_in_by = set(re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", no_ranges))
    label_words = {w.strip() for grp in labels_in_by for w in grp.split(",")}
    return {w for w in words if w not in keywords and w not in label_words}


def substitute(expr: str) -> str:
    """Grafana's variables as a query would get them."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")
    values = {"job": "quiver", "datasource": "quiver"}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ".*"), expr)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, where, expr) for every panel target and variable query."""
    out = []
    for f in sorted((GRAFANA / "dashboards").glob("*.json")):
        d = json.loads(f.read_text())
        for p in d["panels"]:
            for inner in [p] + p.get("panels", []):
                for t in inner.get("targets", []):
                    out.append((f.name, f"panel {inner['id']} {inner['title']!r} {t.get('refId')}", t.get("expr", "")))
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                out.append((f.name, f"variable {v['name']}", q))
    return out


def check_dashboards(facts: Facts) -> str:
    files = sorted((GRAFANA / "dashboards").glob("*.json"))
    check(len(files) >= 2, "expected quiver-overview.json and node-http-example.json")
    uids = set()
    ds_uids = {d["uid"] for d in load_yaml_all((GRAFANA / "provisioning/datasources/quiver.yaml").read_text())[0]["datasources"]}
    counts = []
    for f in files:
        d = json.loads(f.read_text())
        check(d.get("uid") and d["uid"] not in uids, f"{f.name}: missing or duplicate uid")
        uids.add(d["uid"])
        check(35 <= d.get("schemaVersion", 0) <= 41, f"{f.name}: schemaVersion {d.get('schemaVersion')}")
        ids = [p["id"] for p in d["panels"]]
        check(len(ids) == len(set(ids)), f"{f.name}: duplicate panel ids")
        n = 0
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            n += 1
            check(p.get("targets"), f"{f.name}: panel {p['title']!r} has no targets")
            for t in p["targets"]:
                check(t.get("expr", "").strip(), f"{f.name}: panel {p['title']!r} target {t.get('refId')} has no expr")
                check(t["datasource"]["uid"] in ("${datasource}", *ds_uids), f"{f.name}: unknown data source {t['datasource']}")
            g = p["gridPos"]
            check(g["x"] + g["w"] <= 24, f"{f.name}: panel {p['title']!r} wider than the grid")
        dsv = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
        check(dsv and dsv[0]["current"]["value"] in ds_uids, f"{f.name}: default data source is not provisioned")
        counts.append(f"{f.name} {n} panels")
    # Metric names: every quiver_* name exists in src/api/metrics.rs.
    queries = dashboard_queries()
    used_quiver, used_other = set(), set()
    for fname, where, expr in queries:
        for m in metric_names(re.sub(r"^label_values\((.*?)(?:, )?\w+\)$", r"(\1)", expr.strip())):
            if m.startswith("quiver_"):
                check(m in facts.metrics, f"{fname} {where}: metric {m} does not exist in src/api/metrics.rs")
                used_quiver.add(m)
            else:
                used_other.add(m)
    # Syntax: every expression (variables substituted) as a recording rule for promtool.
    promtool = tool("promtool")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:check_{i}", "expr": substitute(e)}
        for i, (_, _, e) in enumerate(queries) if not e.startswith("label_values(")]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
        yaml.safe_dump(rules, tmp)
    try:
        r = run([promtool, "check", "rules", tmp.name])
        check(r.returncode == 0, "promtool rejects a panel query:\n" + r.stdout + r.stderr)
    finally:
        os.unlink(tmp.name)
    unused = sorted(m for m in facts.metrics - used_quiver
                    if not any(m == h + s for h in facts.histograms for s in ("_sum",)))
    return ("; ".join(counts) + f"; {len(queries)} queries, all with an expr, all parse (promtool, "
            f"$__rate_interval=1m); quiver metrics used: {len(used_quiver)}, all in src/api/metrics.rs; "
            f"not on a panel: {', '.join(unused) or 'none'}; other metrics: {', '.join(sorted(used_other))}")


def check_alerts(facts: Facts) -> str:
    promtool = tool("promtool")
    r = run([promtool, "check", "rules", str(DEPLOY / "quiver-alerts.yml")])
    check(r.returncode == 0, "promtool check rules:\n" + r.stdout + r.stderr)
    doc = load_yaml_all((DEPLOY / "quiver-alerts.yml").read_text())[0]
    # Runbooks: every alert links a heading of docs/operations.md (GitHub's anchor rules).
    ops = (ROOT / "docs/operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#{2,4} (.+)$", ops, re.M)}
    n = 0
    for g in doc["groups"]:
        for rule in g["rules"]:
            n += 1
            for m in metric_names(rule["expr"]):
                if m.startswith("quiver_"):
                    check(m in facts.metrics, f"alert {rule['alert']}: metric {m} does not exist")
            url = rule.get("annotations", {}).get("runbook_url", "")
            anchor = url.partition("docs/operations.md#")[2]
            check(anchor in anchors, f"alert {rule['alert']}: runbook_url {url!r} is not a heading of docs/operations.md")
    return (f"promtool check rules: {r.stdout.strip().splitlines()[-1]}; {n} rules, all quiver_* metrics exist, "
            "every runbook_url is a heading of docs/operations.md")


# ------------------------------------------------------------------ optional: a real Quiver

class Server:
    def __init__(self, binary: str, args: list[str], tmp: Path):
        self.log = (tmp / "quiver.log").open("w")
        self.proc = subprocess.Popen([binary, "serve", *args], stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            self.proc.wait(timeout=10)
            raise AssertionError(f"quiver did not start: {line!r}; log:\n{(tmp / 'quiver.log').read_text()[-2000:]}")
        self.url = m.group(1)

    def get(self, path: str, **params) -> tuple[int, str]:
        url = self.url + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, body: bytes) -> int:
        req = urllib.request.Request(self.url + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def wait_ready(self):
        for _ in range(200):
            if self.get("/-/ready")[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError("quiver never became ready")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def demo_lines(metrics_text: str, now_ms: int) -> str:
    """Ten scrapes, 15 s apart, of Quiver's own /metrics (labelled job="quiver"), plus
    node_exporter- and Prometheus-HTTP-style series, as the compose stack would send."""
    out = []
    extra = 'job="quiver",instance="quiver:9201"'
    samples = []
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, rest = series.split("{", 1)
            series = f"{name}{{{extra},{rest}" if rest != "}" else f"{name}{{{extra}}}"
        else:
            series = f"{series}{{{extra}}}"
        samples.append((series, float(value)))
    for k in range(10):
        ts = now_ms - (9 - k) * 15_000
        for series, v in samples:
            out.append(f"{series} {v * (1 + k) + k} {ts}")
        out.append(f'up{{{extra}}} 1 {ts}')
        node = 'job="node",instance="node-exporter:9100"'
        for mode in ("idle", "user", "system"):
            out.append(f'node_cpu_seconds_total{{{node},cpu="0",mode="{mode}"}} {100 + k * (10 if mode == "idle" else 3)} {ts}')
        out.append(f"node_load1{{{node}}} {0.5 + k / 10} {ts}")
        out.append(f"node_memory_MemAvailable_bytes{{{node}}} {4e9 - k * 1e6} {ts}")
        out.append(f"node_memory_MemTotal_bytes{{{node}}} 8e9 {ts}")
        for d in ("receive", "transmit"):
            out.append(f'node_network_{d}_bytes_total{{{node},device="eth0"}} {1e6 * k} {ts}')
        for w, v in (("avail", 5e10), ("size", 1e11)):
            out.append(f'node_filesystem_{w}_bytes{{{node},device="/dev/sda1",fstype="ext4",mountpoint="/"}} {v} {ts}')
        out.append(f"up{{{node}}} 1 {ts}")
        prom = 'job="prometheus",instance="localhost:9090"'
        out.append(f"up{{{prom}}} 1 {ts}")
        for code, n in (("200", 20), ("503", 1)):
            out.append(f'prometheus_http_requests_total{{{prom},code="{code}",handler="/api/v1/query"}} {n * k} {ts}')
        for le, n in (("0.1", 15), ("1", 19), ("+Inf", 21)):
            out.append(f'prometheus_http_request_duration_seconds_bucket{{{prom},handler="/api/v1/query",le="{le}"}} {n * k} {ts}')
    return "\n".join(out) + "\n"


def check_live(facts: Facts, binary: str) -> str:
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. The real binary accepts each TOML config of the kit (unknown keys are errors
        # there), with storage redirected to a scratch dir; then stops cleanly on SIGTERM.
        # The cluster configs run as a single process here (their role is a flag of each
        # node, and a role needs a bucket): what this checks is that every key, [cluster]
        # included, is one the binary takes.
        for i, cfg in enumerate((COMPOSE / "quiver.toml", K8S / "quiver.toml",
                                 COMPOSE / "cluster.toml", K8S_CLUSTER / "quiver.toml")):
            d = tmp / f"{i}-{cfg.parent.name}"
            srv = Server(binary, ["--config", str(cfg), "--data-dir", str(d), "--storage-url", "file://",
                                  "--listen", "127.0.0.1:0"], tmp)
            srv.wait_ready()
            check(srv.get("/-/healthy")[0] == 200, "/-/healthy is not 200")
            rc = srv.stop()
            check(rc == 0, f"{cfg.relative_to(ROOT)}: exit status {rc} after SIGTERM")
            notes.append(f"{cfg.relative_to(ROOT)} accepted, SIGTERM exit 0")
        # 2. Every dashboard query through the HTTP API on Quiver's own metrics + demo data.
        srv = Server(binary, ["--data-dir", str(tmp / "live"), "--listen", "127.0.0.1:0"], tmp)
        try:
            srv.wait_ready()
            # Traffic first, so the request and error panels have series: a bad query
            # (bad_data), an empty remote write (400), a range query and a small import.
            srv.get("/api/v1/query", query="rate(")
            srv.post("/api/v1/write", b"")
            srv.post("/api/v1/import/prometheus", f"quiver_validate_probe 1 {int(time.time() * 1000)}\n".encode())
            srv.get("/api/v1/query_range", query="up", start=time.time() - 600, end=time.time(), step=15)
            _, metrics_text = srv.get("/metrics")
            now_ms = int(time.time() * 1000)
            check(srv.post("/api/v1/import/prometheus", demo_lines(metrics_text, now_ms).encode()) in (200, 204),
                  "demo import failed")
            empty, n = [], 0
            for fname, where, expr in dashboard_queries():
                n += 1
                m = re.fullmatch(r"label_values\((?:(.+), )?(\w+)\)", expr.strip())
                if m:
                    params = {"match[]": substitute(m.group(1))} if m.group(1) else {}
                    code, body = srv.get(f"/api/v1/label/{m.group(2)}/values", **params)
                else:
                    code, body = srv.get("/api/v1/query_range", query=substitute(expr),
                                         start=(now_ms - 600_000) / 1000, end=now_ms / 1000, step=15)
                check(code == 200, f"{fname} {where}: HTTP {code}: {body[:300]}")
                data = json.loads(body)["data"]
                if not (data if m else data["result"]):
                    empty.append(f"{fname} {where}")
            # Every panel shows data on a fresh server (counters of rare events are
            # exported at 0): a panel with none is a wrong metric or label.
            check(not empty, "dashboard queries without data: " + "; ".join(empty))
            notes.append(f"{n} dashboard queries answered 200 by Quiver, every one with data")
        finally:
            srv.stop()
    return "\n".join(notes)


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-missing", action="store_true", help="report checks whose tool is missing as SKIP, not FAIL")
    ap.add_argument("--quiver", metavar="BIN", help="a built quiver binary: also start it with the kit's configs and run every dashboard query")
    args = ap.parse_args()
    rep = Report(args.skip_missing)
    print(f"Validating the deploy kit in {ROOT}\n")
    if yaml is None:
        rep.run("PyYAML importable", lambda: (_ for _ in ()).throw(Missing("PyYAML (pip install pyyaml)")))
        return rep.summary()
    facts: Facts | None = None

    def load():
        nonlocal facts
        facts = Facts()
        return check_sources(facts)

    rep.run("sources: flags, variables, config keys, metrics", load)
    if facts is None:
        return rep.summary()
    rep.run("Dockerfile and .dockerignore consistent with README.md and the sources", lambda: check_dockerfile(facts))
    rep.run("TOML configs use only known keys", lambda: check_toml_files(facts))
    rep.run("Kubernetes base: kustomize + kubernetes-validate --strict + consistency", lambda: check_kubernetes(facts))
    rep.run("compose stack: docker-compose config + consistency", lambda: check_compose(facts))
    rep.run("Kubernetes cluster base (kubernetes/cluster): roles, writers' names, one bucket and shard count",
            lambda: check_kubernetes_cluster(facts))
    rep.run("compose cluster (compose/cluster.yaml): roles, writers' names, one bucket and shard count, wiring",
            lambda: check_compose_cluster(facts))
    rep.run("systemd unit: systemd-analyze verify + hardening", lambda: check_systemd(facts))
    rep.run("alert rules: promtool check rules", lambda: check_alerts(facts))
    rep.run("Grafana dashboards: JSON, targets, metric names, PromQL syntax", lambda: check_dashboards(facts))
    if args.quiver:
        rep.run(f"live: {args.quiver} with the kit's configs and every dashboard query", lambda: check_live(facts, args.quiver))
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
