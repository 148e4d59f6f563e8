"""Drives the real `helm` CLI (helm.sh/helm/v4) by subprocess for sites delivered by a Helm
release: read a release, upgrade its image values with the release's own deployed chart, dry-run
that on the server, roll it back. Every run is bounded by a timeout; helm's failures are mapped
once, in `_failure`, to HelmError with helm's own message (never a traceback).

The release's own chart: the helm CLI cannot hand out the chart of a release (`helm pull` only
knows repositories, `helm get` prints manifest, values, hooks, notes and metadata, and `helm
status -o json` strips the chart). But the chart IS in the release record (the Secret
`sh.helm.release.v1.<name>.v<revision>`), and `helm get all --revision N --template T` executes
the Go template T over that record. `_CHART_TEMPLATE` prints the chart's metadata, templates,
files and schema there, every string hex-encoded (text/template has no JSON function, and hex
survives any byte), and `export_chart` writes them back as a chart directory. values.yaml is
left empty on purpose: with `--reuse-values` helm replaces the chart's defaults with the deployed
revision's coalesced values (action.Upgrade.reuseValues), so nothing of the release's values is
lost and nothing new comes in. The record does NOT keep subcharts (Chart.dependencies is not
serialized): a chart with dependencies is refused (HELM_CHART) rather than upgraded without them.

No `--wait`: `upgrade` returns once helm has applied the manifest and recorded the revision
("deployed"); the rollout is followed separately through the release's workloads with the
reconciler's own rules (level-triggered, so a restart of the reconciler mid-rollout loses
nothing), and a failed one is undone with `rollback`. A `helm upgrade --wait` killed mid-wait
(the pod restarted, the subprocess timed out) would leave the release "pending-upgrade", which
refuses every later upgrade until someone rolls it back by hand. `wait=True` is there for a
caller that wants helm's own watcher (`--wait=watcher`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ruamel.yaml import YAML

from reconciler.core.errors import ErrorKind, HelmError
from reconciler.core.helmrelease import (
    Revision,
    Upgraded,
    Workload,
    current,
    set_argument,
    workloads,
)

_META_STRINGS = (
    "Name",
    "Home",
    "Version",
    "Description",
    "Icon",
    "APIVersion",
    "Condition",
    "Tags",
    "AppVersion",
    "KubeVersion",
    "Type",
)
_META_LISTS = ("Sources", "Keywords")
_CHART_TEMPLATE = (
    "{{- with .Release.Chart -}}{{- with .Metadata -}}"
    + "".join(f'meta {f} {{{{ printf "%x" .{f} }}}}\n' for f in _META_STRINGS)
    + "".join(
        f'{{{{ range .{f} }}}}list {f} {{{{ printf "%x" . }}}}\n{{{{ end }}}}' for f in _META_LISTS
    )
    + "{{ if .Deprecated }}deprecated\n{{ end }}"
    + '{{ range $k, $v := .Annotations }}annotation {{ printf "%x" $k }} {{ printf "%x" $v }}\n'
    "{{ end }}"
    + '{{ range .Maintainers }}maintainer {{ printf "%x" .Name }} {{ printf "%x" .Email }} '
    '{{ printf "%x" .URL }}\n{{ end }}'
    + '{{ range .Dependencies }}dependency {{ printf "%x" .Name }}\n{{ end }}'
    + "{{- end -}}"
    + '{{ range .Templates }}template {{ printf "%x" .Name }} {{ printf "%x" .Data }}\n{{ end }}'
    + '{{ range .Files }}file {{ printf "%x" .Name }} {{ printf "%x" .Data }}\n{{ end }}'
    + 'schema {{ printf "%x" .Schema }}\n'
    + "{{- end -}}"
)
_NOT_FOUND = ("release: not found", "has no deployed releases")
_BUSY = "another operation (install/upgrade/rollback) is in progress"
_TIMEOUT = ("context deadline exceeded", "timed out waiting", "timeout waiting")


@dataclass(frozen=True, slots=True)
class Release:
    """A release as helm reports it: the deployed revision, its computed values and manifest,
    and the whole history (newest last)."""

    namespace: str
    name: str
    revision: Revision
    values: Mapping[str, Any]
    manifest: str
    history: tuple[Revision, ...]

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return workloads(self.manifest, self.namespace)


@dataclass(frozen=True, slots=True)
class ChartDir:
    """The deployed chart written back as a directory (export_chart)."""

    path: Path
    name: str
    version: str


class HelmCLI:
    """The `helm` binary with its own config, cache and data directories under `home` (never
    the user's), the given kubeconfig/context (none: helm's in-cluster config), and a timeout
    on every run (`timeout` for reads; an upgrade's or rollback's own timeout plus a margin)."""

    def __init__(
        self,
        binary: str | Path = "helm",
        *,
        home: Path | None = None,
        kubeconfig: Path | None = None,
        kube_context: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.binary = str(binary)
        self._home = home  # made on first use: a process without Helm sites writes nothing
        self._home_lock = threading.Lock()
        self.kubeconfig = kubeconfig
        self.kube_context = kube_context
        self.timeout = timeout

    # ---- plumbing ----------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        """helm's HOME, config, cache and data: the given directory, else a temporary one made
        when helm first runs."""
        with self._home_lock:  # reads of several releases run helm at once
            if self._home is None:
                self._home = Path(tempfile.mkdtemp(prefix="reconciler-helm-"))
            return self._home

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, where: str, *argv: str, timeout: float | None = None) -> str:
        """helm's stdout; HelmError (helm's message, mapped by `_failure`) when it fails."""
        cmd = [self.binary, *argv]
        if self.kube_context:
            cmd.append(f"--kube-context={self.kube_context}")
        limit = timeout if timeout is not None else self.timeout
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                timeout=limit,
                check=False,
            )
        except FileNotFoundError as exc:
            raise HelmError(
                f"{where}: no helm binary at {self.binary!r}", kind=ErrorKind.HELM_MISSING
            ) from exc
        except PermissionError as exc:
            raise HelmError(
                f"{where}: {self.binary!r} cannot be run ({exc.strerror})",
                kind=ErrorKind.HELM_MISSING,
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise HelmError(
                f"{where}: helm {argv[0]} did not finish within {limit:g} s (stopped)",
                kind=ErrorKind.HELM_TIMEOUT,
            ) from exc
        if proc.returncode != 0:
            raise _failure(where, argv[0], proc.stderr or proc.stdout)
        return proc.stdout

    def _json(self, where: str, *argv: str) -> Any:
        out = self.run(where, *argv)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise HelmError(f"{where}: helm {argv[0]} answered no JSON: {out[:200]!r}") from exc

    # ---- reading -----------------------------------------------------------------------------

    def history(
        self, namespace: str, name: str, *, max_revisions: int = 256
    ) -> tuple[Revision, ...]:
        """`helm history -o json`: every revision kept, oldest first."""
        where = f"helm release {namespace}/{name}"
        rows = self._json(
            where, "history", name, "-n", namespace, "-o", "json", f"--max={max_revisions}"
        )
        return tuple(sorted((_revision(r) for r in rows or ()), key=lambda r: r.number))

    def values(self, namespace: str, name: str, revision: int) -> Mapping[str, Any]:
        """The computed values (chart defaults merged with the release's) of one revision."""
        where = f"helm release {namespace}/{name}"
        got = self._json(
            where, "get", "values", name, "-n", namespace, "--all", "-o", "json",
            f"--revision={revision}",
        )  # fmt: skip
        return got if isinstance(got, Mapping) else {}

    def manifest(self, namespace: str, name: str, revision: int) -> str:
        where = f"helm release {namespace}/{name}"
        return self.run(where, "get", "manifest", name, "-n", namespace, f"--revision={revision}")

    def read(self, namespace: str, name: str) -> Release:
        """The release: its history, then the deployed revision's values and manifest (three
        helm runs)."""
        history = self.history(namespace, name)
        deployed = current(history)
        if deployed is None:
            raise HelmError(
                f"helm release {namespace}/{name}: not found",
                kind=ErrorKind.HELM_RELEASE_NOT_FOUND,
            )
        return Release(
            namespace,
            name,
            deployed,
            self.values(namespace, name, deployed.number),
            self.manifest(namespace, name, deployed.number),
            history,
        )

    def export_chart(self, namespace: str, name: str, revision: int, dest: Path) -> ChartDir:
        """The chart of one revision, as stored in its release record, written into `dest`."""
        where = f"helm release {namespace}/{name}"
        out = self.run(
            where, "get", "all", name, "-n", namespace, f"--revision={revision}",
            "--template", _CHART_TEMPLATE,
        )  # fmt: skip
        return _write_chart(where, out, dest)

    # ---- writing -----------------------------------------------------------------------------

    def upgrade(
        self,
        namespace: str,
        name: str,
        values: Sequence[tuple[str, str]],
        *,
        description: str,
        dry_run: bool = False,
        wait: bool = False,
        timeout: float = 300.0,
        revision: int | None = None,
    ) -> Upgraded:
        """`helm upgrade NAME <its deployed chart> --reuse-values --set-string K=V ...`. Values
        go through --set-string: with --set, helm would turn a tag such as 1234567 into a
        number (and a chart's schema may refuse it). dry_run: `--dry-run=server`, the API
        server validates, nothing is kept, and the manifest comes without the chart's Secrets
        (`--hide-secret`), so a plan never shows their data. `revision`: the deployed revision
        the upgrade was planned against; another one is a conflict (someone else upgraded)."""
        where = f"helm release {namespace}/{name}"
        deployed = current(self.history(namespace, name))
        if deployed is None:
            raise HelmError(f"{where}: not found", kind=ErrorKind.HELM_RELEASE_NOT_FOUND)
        _expect(where, deployed, revision)
        argv = ["upgrade", name]
        flags = ["-n", namespace, "--reuse-values", "--description", description, "-o", "json"]
        flags += [a for k, v in values for a in ("--set-string", set_argument(k, v))]
        flags += ["--dry-run=server", "--hide-secret"] if dry_run else []
        flags += [f"--timeout={int(timeout)}s"] + (["--wait=watcher"] if wait else [])
        with tempfile.TemporaryDirectory(prefix="chart-", dir=self.home) as tmp:
            chart = self.export_chart(namespace, name, deployed.number, Path(tmp))
            out = self.run(where, *argv, str(chart.path), *flags, timeout=timeout + 30)
        try:
            got = json.loads(out)
        except ValueError as exc:
            raise HelmError(f"{where}: helm upgrade answered no JSON: {out[:200]!r}") from exc
        info = got.get("info") or {}
        return Upgraded(
            int(got.get("version", 0)),
            str(info.get("status", "")),
            str(info.get("description", "")),
            str(got.get("manifest", "")),
            dry_run,
        )

    def rollback(
        self,
        namespace: str,
        name: str,
        revision: int,
        *,
        description: str,
        wait: bool = False,
        timeout: float = 300.0,
        expect: int | None = None,
    ) -> Revision:
        """`helm rollback NAME REVISION --description D`; the revision it made. `expect`: the
        deployed revision it was planned against (another one is a conflict)."""
        where = f"helm release {namespace}/{name}"
        if expect is not None:
            _expect(where, current(self.history(namespace, name)), expect)
        flags = ["-n", namespace, "--description", description, f"--timeout={int(timeout)}s"]
        flags += ["--wait=watcher"] if wait else []
        self.run(where, "rollback", name, str(revision), *flags, timeout=timeout + 30)
        made = current(self.history(namespace, name))
        if made is None:  # pragma: no cover - helm just wrote it
            raise HelmError(f"{where}: the rollback left no revision")
        return made


def _expect(where: str, deployed: Revision | None, revision: int | None) -> None:
    if revision is not None and (deployed is None or deployed.number != revision):
        now = deployed.number if deployed else "none"
        raise HelmError(
            f"{where}: the deployed revision is {now}, not {revision} as planned",
            kind=ErrorKind.CONFLICT,
        )


def _failure(where: str, verb: str, output: str) -> HelmError:
    """The one mapping of helm's failures: helm's own last lines, and a kind."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    # helm's error is its last "Error: ..." line and any lines after it (a schema's findings)
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Error: ")), default=-1)
    said = lines[start:] if start >= 0 else lines[-1:]
    message = " ".join(said).removeprefix("Error: ")[:1000] or "no output"
    lowered = output.lower()
    if any(w in lowered for w in _NOT_FOUND):
        return HelmError(f"{where}: not found ({message})", kind=ErrorKind.HELM_RELEASE_NOT_FOUND)
    if _BUSY in lowered:
        return HelmError(
            f"{where}: {message}; it is retried on the next sync", kind=ErrorKind.HELM_BUSY
        )
    if any(w in lowered for w in _TIMEOUT):
        return HelmError(f"{where}: helm {verb} timed out: {message}", kind=ErrorKind.HELM_TIMEOUT)
    return HelmError(f"{where}: helm {verb} failed: {message}")


def _revision(row: Mapping[str, Any]) -> Revision:
    return Revision(
        number=int(row.get("revision", 0)),
        status=str(row.get("status", "")),
        description=str(row.get("description", "")),
        updated=str(row.get("updated", "")),
        chart=str(row.get("chart", "")),
        app_version=str(row.get("app_version", "")),
    )


def _unhex(where: str, field: str) -> str:
    try:
        return bytes.fromhex(field).decode()
    except ValueError as exc:
        raise HelmError(f"{where}: the release record's chart does not decode") from exc


def _safe_path(where: str, root: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise HelmError(
            f"{where}: the chart holds a file outside it: {name!r}", kind=ErrorKind.HELM_CHART
        )
    return root.joinpath(*rel.parts)


def _write_chart(where: str, out: str, dest: Path) -> ChartDir:
    """The chart directory from _CHART_TEMPLATE's lines (one record per line, fields hex)."""
    meta: dict[str, Any] = {}
    deps: list[str] = []
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split(" ")
        if kind == "meta" and len(fields) == 2 and fields[1]:
            meta[_CHART_KEYS[fields[0]]] = _unhex(where, fields[1])
        elif kind == "list" and len(fields) == 2:
            meta.setdefault(fields[0].lower(), []).append(_unhex(where, fields[1]))
        elif kind == "deprecated":
            meta["deprecated"] = True
        elif kind == "annotation" and len(fields) == 2:
            meta.setdefault("annotations", {})[_unhex(where, fields[0])] = _unhex(where, fields[1])
        elif kind == "maintainer" and len(fields) == 3:
            person = zip(("name", "email", "url"), (_unhex(where, f) for f in fields), strict=True)
            meta.setdefault("maintainers", []).append({k: v for k, v in person if v})
        elif kind == "dependency":
            deps.append(_unhex(where, fields[0]))
        elif kind in ("template", "file") and len(fields) == 2:
            path = _safe_path(where, dest, _unhex(where, fields[0]))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes.fromhex(fields[1]))
        elif kind == "schema" and rest:
            (dest / "values.schema.json").write_bytes(bytes.fromhex(rest))
    if deps:
        raise HelmError(
            f"{where}: its chart has subcharts ({', '.join(deps)}), which Helm's release record "
            "does not keep, so the deployed chart cannot be re-used",
            kind=ErrorKind.HELM_CHART,
        )
    if "name" not in meta or "version" not in meta:
        raise HelmError(
            f"{where}: the release record holds no chart metadata", kind=ErrorKind.HELM_CHART
        )
    with (dest / "Chart.yaml").open("w", encoding="utf-8") as f:
        YAML(typ="safe", pure=True).dump(meta, f)
    # Empty on purpose: --reuse-values replaces the chart's defaults with the deployed values.
    (dest / "values.yaml").write_text("{}\n", encoding="utf-8")
    return ChartDir(dest, str(meta["name"]), str(meta["version"]))


_CHART_KEYS = {
    "Name": "name",
    "Home": "home",
    "Version": "version",
    "Description": "description",
    "Icon": "icon",
    "APIVersion": "apiVersion",
    "Condition": "condition",
    "Tags": "tags",
    "AppVersion": "appVersion",
    "KubeVersion": "kubeVersion",
    "Type": "type",
}
