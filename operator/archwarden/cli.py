"""The ``archwarden`` command line.

Expected failures (bad references, registry errors, unreadable files) print one line on stderr
and set the exit status; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from archwarden import __version__, policy, reference, registry, settings
from archwarden.printable import printable

__all__ = ["main"]

DOCKER_CONFIG_BYTES = settings.LimitsSettings().pull_secret_bytes
"""Bytes of one ``--docker-config`` file: the operator's bound on a pull secret, so ``check``
refuses what the webhook would, and a wrong path (a huge file, /dev/zero) is one line."""


def _registry_settings(args: argparse.Namespace) -> registry.ClientSettings:
    per_host: dict[str, dict[str, Any]] = {}
    for host in args.insecure_registry:
        per_host.setdefault(host, {})["insecure"] = True
    for item in args.mirror:
        upstream, sep, mirror = item.partition("=")
        if not sep or not upstream or not mirror:
            raise SystemExit(f"archwarden: error: --mirror wants REGISTRY=MIRROR, got {item!r}")
        entry = per_host.setdefault(upstream, {})
        entry["mirrors"] = (*entry.get("mirrors", ()), mirror)
    return registry.ClientSettings(
        registries={host: registry.RegistrySettings(**values) for host, values in per_host.items()},
        ca_file=args.ca_file,
        timeout=args.timeout,
        # --timeout promises seconds per request: a registry trickling a byte a second passes
        # every per-read timeout, so the whole request is bounded too.
        request_deadline=args.timeout,
        # A lookup is several requests; a --timeout above a third of the usual deadline would
        # otherwise be cut short by it.
        deadline=max(registry.ClientSettings().deadline, 3 * args.timeout),
    )


def _providers(args: argparse.Namespace) -> registry.CredentialProviders | None:
    """Kubelet credential provider plugins, from the kubelet's own two flags. Without a
    cluster no ServiceAccount token can be requested: token-mode providers run only when the
    config lets them run without one (requireServiceAccount: false)."""
    config, bin_dir = args.image_credential_provider_config, args.image_credential_provider_bin_dir
    if not config and not bin_dir:
        return None
    if not config or not bin_dir:
        raise registry.InvalidProviderConfig(
            "--image-credential-provider-config and --image-credential-provider-bin-dir go together"
        )
    return registry.CredentialProviders.from_files(
        config, bin_dir, limits=registry.ProviderLimits(timeout=args.timeout)
    )


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("IMAGE", "DIGEST", "PLATFORMS")
    lines = [header]
    for row in rows:
        if "error" in row:
            lines.append((printable(row["image"]), "-", "error: see stderr"))
        else:
            platforms = ", ".join(row["platforms"])
            if "artifactType" in row:
                # Names no platform: mounts anywhere as an image volume, runs nowhere.
                platforms = f"none: artifact {row['artifactType']}"
            lines.append((printable(row["image"]), row["digest"], printable(platforms)))
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    return "\n".join(
        f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]}".rstrip() for line in lines
    )


# Exit statuses of ``inspect``: 1 wins over 3, since a failed image may hide a mismatch.
EXIT_FAILED = 1
EXIT_MISMATCH = 3


def _mismatch_lines(row: dict[str, Any]) -> list[str]:
    """One line per index entry whose config names another platform than the index."""
    lines = []
    for entry in row.get("verification", {}).get("mismatches", []):
        lines.append(
            printable(
                f"MISMATCH  {row['image']}: the index lists {entry['digest']} as "
                f"{entry['index']}, its config says {entry['config']}"
            )
        )
    return lines


async def _inspect(args: argparse.Namespace) -> int:
    settings = _registry_settings(args)
    try:
        credentials = registry.CredentialStore.from_files(
            args.docker_config, max_bytes=DOCKER_CONFIG_BYTES
        )
        providers = _providers(args)
    except (registry.InvalidDockerConfig, registry.InvalidProviderConfig) as error:
        print(f"archwarden: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    async with registry.RegistryClient(settings, credentials) as client:
        resolver = registry.Resolver(client)

        async def one(text: str) -> dict[str, Any]:
            notes: list[str] = []
            try:
                ref = reference.parse(text)
                if providers is not None:
                    # --docker-config first, as the kubelet puts pull secrets before providers.
                    provided = await providers.for_image(ref)
                    notes = provided.problems
                    registry.RegistryClient.using(provided.store.merged(credentials))
                row = (await resolver.resolve(ref)).to_json()
                if args.verify:
                    checked = await client.verify(ref)
                    verification = checked.to_json()
                    row["verification"] = {
                        "entries": verification["entries"],
                        "mismatches": verification["mismatches"],
                    }
                return row
            except (reference.InvalidReference, registry.RegistryError) as error:
                return {"image": text, "error": "; ".join([str(error), *notes])}

        # Each image is its own task (gather), so the credentials set for one stay its own.
        rows = await asyncio.gather(*(one(text) for text in args.images))
    for row in rows:
        if "error" in row:
            print(f"archwarden: error: {printable(row['error'])}", file=sys.stderr)
    mismatches = [line for row in rows for line in _mismatch_lines(row)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
        for line in mismatches:
            print(line)
    if any("error" in row for row in rows):
        return EXIT_FAILED
    return EXIT_MISMATCH if mismatches else 0


def _load_documents(paths: list[str]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(source, object) for every document, unwrapping lists (see :func:`_unwrap`); and read
    errors."""
    import yaml

    found: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            errors.append(f"{path}: not valid YAML{where}")
            continue
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                errors.append(f"{path}: document {index + 1} is not a mapping")
                continue
            if not _unwrap(doc, found.append, path):
                errors.append(
                    f"{path}: document {index + 1}: lists nested deeper than {MAX_LIST_DEPTH}"
                )
    return found, errors


MAX_LIST_DEPTH = 4
"""Lists inside lists unwrapped at most: kubectl output nests once at most, and a deeper
nesting is a broken (or hostile) file, not a reason to recurse without end."""


def _unwrap(
    obj: dict[str, Any],
    add: Callable[[tuple[str, dict[str, Any]]], None],
    source: str,
    depth: int = 0,
) -> bool:
    """Pass ``obj``, or every object of a list kind kubectl applies (``List``, and any
    ``FooList`` with ``items``), to ``add``; False when lists nest too deep."""
    kind, items = obj.get("kind"), obj.get("items")
    if not (isinstance(kind, str) and kind.endswith("List") and isinstance(items, list)):
        add((source, obj))
        return True
    if depth >= MAX_LIST_DEPTH:
        return False
    # Typed lists (ReplicationControllerList) may leave kind and apiVersion off their items,
    # as the API server does; kubectl takes them from the list, and so does this.
    item_kind = kind.removesuffix("List")
    ok = True
    for item in items:
        if not isinstance(item, dict):
            continue
        if item_kind and "kind" not in item:
            item = {"apiVersion": obj.get("apiVersion"), **item, "kind": item_kind}
        ok = _unwrap(item, add, source, depth + 1) and ok
    return ok


def _cluster_nodes(
    kubeconfig: str | None, config: settings.CapacitySettings
) -> tuple[list[policy.Node], list[policy.ProvisionableClass], list[str]]:
    """The cluster's nodes, its provisionable capacity, and the capacity objects that could
    not be read."""
    from archwarden import kube

    api = kube.load_api_client(kubeconfig)
    reader = kube.ApiReader(api)

    async def read() -> tuple[list[Any], list[policy.ProvisionableClass], list[str]]:
        items = await reader.list("v1", "nodes")
        capacity, problems = await kube.list_capacity(reader, config)
        return list(items), capacity, problems

    items, capacity, problems = asyncio.run(read())
    return [policy.node_from_object(item) for item in items], capacity, problems


PROVISIONABLE_MARK = "+"
"""``--platforms linux/amd64,+linux/arm64``: the ``+`` entries are capacity an autoscaler can
add, not nodes that exist."""


def _platform_capacity(
    specs: list[str],
) -> tuple[list[policy.Node], list[policy.ProvisionableClass]]:
    """``--platforms``: existing nodes, and provisionable node groups (one per ``+`` entry)."""
    existing = [s for s in specs if not s.startswith(PROVISIONABLE_MARK)]
    marked = [s[len(PROVISIONABLE_MARK) :].strip() for s in specs if s.startswith("+")]
    nodes = policy.nodes_from_platforms(existing)
    groups = []
    for spec in dict.fromkeys(marked):
        name = spec.replace("/", "-")
        groups.append(
            policy.node_group(policy.Source("nodeGroup", name), {}, platform_specs=[spec])
        )
    return nodes, groups


def _offline_settings(args: argparse.Namespace) -> settings.Settings:
    """The policy settings ``check`` and ``report`` take from their flags."""
    return settings.Settings(
        mode=getattr(args, "mode", "audit"),
        failure_policy=getattr(args, "failure_policy", "open"),
        platforms=settings.PlatformSettings(
            arm64_runs_arm32=args.arm64_runs_arm32,
            amd64_runs_386=args.amd64_runs_386,
            taints=(
                policy.DEFAULT_PLATFORM_TAINTS
                if args.platform_taints is None
                else tuple(args.platform_taints)
            ),
        ),
    )


def _engine(
    config: settings.Settings,
    client: registry.RegistryClient,
    nodes: list[policy.Node],
    timeout: float,
    images: int = 1,
    capacity: list[policy.ProvisionableClass] | None = None,
    providers: registry.CredentialProviders | None = None,
) -> Any:
    """The webhook's engine (resolver cache included) for a command line run. Its budget
    covers ``images`` lookups in rounds of ``limits.maxConcurrentResolutions``, each up to
    three request timeouts: a CLI waits for answers the webhook would not."""
    from archwarden import admission

    rounds = -(-max(images, 1) // config.limits.max_concurrent_resolutions)
    webhook = dataclasses.replace(config.webhook, budget_seconds=timeout * 3 * rounds)
    return admission.Admission(
        dataclasses.replace(config, webhook=webhook),
        registry.Resolver(client),
        lambda: nodes,
        capacity=lambda: capacity or [],
        image_credentials=providers.for_image if providers is not None else None,
    )


async def _check(args: argparse.Namespace) -> int:
    try:
        credentials = registry.CredentialStore.from_files(
            args.docker_config, max_bytes=DOCKER_CONFIG_BYTES
        )
        providers = _providers(args)
    except (registry.InvalidDockerConfig, registry.InvalidProviderConfig) as exc:
        print(f"archwarden: error: {exc}", file=sys.stderr)
        return 2
    documents, errors = _load_documents(args.filename)
    capacity: list[policy.ProvisionableClass]
    if args.platforms:
        try:
            nodes, capacity = _platform_capacity(
                [p.strip() for p in args.platforms.split(",") if p.strip()]
            )
        except ValueError as exc:
            print(f"archwarden: error: --platforms: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            # As archwarden would count them: Cluster API node groups only from the namespaces
            # named (capacity.clusterAPI.namespaces), none unless some are.
            capi = settings.ClusterAPISettings(namespaces=tuple(args.cluster_api_namespace))
            nodes, capacity, problems = await asyncio.to_thread(
                _cluster_nodes, args.kubeconfig, settings.CapacitySettings(cluster_api=capi)
            )
        except Exception as exc:  # a missing kubeconfig or an unreachable cluster: one line
            print(f"archwarden: error: cannot read the cluster's nodes: {exc}", file=sys.stderr)
            return 2
        for problem in problems:
            print(f"archwarden: warning: capacity ignored: {problem}", file=sys.stderr)
    workloads: list[tuple[str, policy.Workload, tuple[str, ...]]] = []
    for source, obj in documents:
        if obj.get("kind") not in policy.SPEC_PATHS:
            continue
        try:
            workload = policy.extract(obj)
            assumed: tuple[str, ...] = ()
            if args.platforms:
                # Nodes made from --platforms model only os and arch: a pod selecting disktype
                # or a host name would match none of them and its images go unchecked. Live
                # nodes (--from-cluster) have every label, so nothing is assumed there.
                workload, assumed = policy.assume_unmodelled(workload)
            workloads.append((source, workload, assumed))
        except policy.InvalidWorkload as exc:
            name = (obj.get("metadata") or {}).get("name", "?")
            errors.append(f"{source}: {obj.get('kind')} {name}: {exc}")
    config = _offline_settings(args)
    rows: list[dict[str, Any]] = []
    async with registry.RegistryClient(_registry_settings(args), credentials) as client:
        engine = _engine(
            config, client, nodes, args.timeout, capacity=capacity, providers=providers
        )
        for source, workload, assumed in workloads:
            answers = await engine.answers(workload.template.images, credentials)
            decision = policy.decide(
                workload,
                nodes,
                answers,
                mode=policy.Mode(args.mode),
                failure_policy=policy.FailurePolicy(args.failure_policy),
                fallbacks=config.platforms.fallbacks(),
                capacity=capacity,
                platform_taints=config.platforms.taints,
            )
            verdict = "deny" if not decision.allowed else ("warn" if decision.message else "ok")
            if decision.reason is policy.Reason.PROVISIONABLE:
                verdict = "ok"  # admitted; the message says which autoscaler adds the node
            rows.append(
                {
                    "file": source,
                    "kind": workload.kind,
                    "namespace": workload.namespace,
                    "name": workload.name,
                    "verdict": verdict,
                    "reason": str(decision.reason),
                    "message": decision.message,
                    "platforms": list(decision.pod_platforms),
                    "provisionable": list(decision.provisionable_sources),
                    "assumed": list(assumed),
                }
            )
    for error in errors:
        print(f"archwarden: error: {printable(error)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            name = f"{row['kind']}/{row['name']}"
            if row["namespace"]:
                name = f"{row['namespace']}/{name}"
            line = f"{row['verdict'].upper():4}  {name}"
            if row["message"]:
                line += f": {row['message']}"
            print(printable(line))
            if row["assumed"]:
                print(printable(f"      assumed satisfiable: {', '.join(row['assumed'])}"))
    return 1 if errors or any(r["verdict"] == "deny" for r in rows) else 0


# Lists the report reads: (apiVersion, plural, kind). List items carry no kind of their own.
_REPORT_LISTS = (
    ("apps/v1", "deployments", "Deployment"),
    ("apps/v1", "statefulsets", "StatefulSet"),
    ("apps/v1", "daemonsets", "DaemonSet"),
    ("apps/v1", "replicasets", "ReplicaSet"),
    ("batch/v1", "jobs", "Job"),
    ("batch/v1", "cronjobs", "CronJob"),
    ("v1", "pods", "Pod"),
)


async def _cluster_state(
    kubeconfig: str | None,
) -> tuple[list[policy.Node], list[dict[str, Any]]]:
    from archwarden import kube

    api = await asyncio.to_thread(kube.load_api_client, kubeconfig)
    reader = kube.ApiReader(api)
    listed = await asyncio.gather(
        reader.list("v1", "nodes"), *(reader.list(v, plural) for v, plural, _ in _REPORT_LISTS)
    )
    nodes = [policy.node_from_object(item) for item in listed[0]]
    objects = [
        {**item, "kind": kind}
        for (_, _, kind), items in zip(_REPORT_LISTS, listed[1:], strict=True)
        for item in items
    ]
    return nodes, objects


async def _report(args: argparse.Namespace) -> int:
    from archwarden import readiness

    try:
        credentials = registry.CredentialStore.from_files(
            args.docker_config, max_bytes=DOCKER_CONFIG_BYTES
        )
        providers = _providers(args)
    except (registry.InvalidDockerConfig, registry.InvalidProviderConfig) as exc:
        print(f"archwarden: error: {exc}", file=sys.stderr)
        return 2
    try:
        nodes, objects = await _cluster_state(args.kubeconfig)
    except Exception as exc:  # a missing kubeconfig or an unreachable cluster: one line
        print(f"archwarden: error: cannot read the cluster: {exc}", file=sys.stderr)
        return 2
    errors: list[str] = []
    workloads: list[policy.Workload] = []
    weights: dict[tuple[str, str, str], readiness.Weight] = {}
    for obj in readiness.top_level(objects):
        meta = obj.get("metadata") or {}
        if args.namespace and meta.get("namespace") not in args.namespace:
            continue
        try:
            workload = policy.extract(obj)
        except policy.InvalidWorkload as exc:
            errors.append(f"{meta.get('namespace')}/{obj.get('kind')}/{meta.get('name')}: {exc}")
            continue
        workloads.append(workload)
        key = (workload.namespace, workload.kind, workload.name)
        weights[key] = readiness.weigh(obj, nodes=len(nodes))
    config = _offline_settings(args)
    images = list(dict.fromkeys(i for w in workloads for i in w.template.images))
    async with registry.RegistryClient(_registry_settings(args), credentials) as client:
        engine = _engine(config, client, nodes, args.timeout, len(images), providers=providers)
        answers = await engine.answers(images, credentials)
    # Each error names the registry and repository, or the image it could not parse.
    errors.extend(a.error for a in answers.values() if isinstance(a, policy.ImageFailure))
    report = readiness.build(
        workloads,
        nodes,
        answers,
        fallbacks=config.platforms.fallbacks(),
        platform_taints=config.platforms.taints,
        weights=weights,
    )
    if args.format == "json":
        text = json.dumps(report.to_json(), indent=2) + "\n"
    elif args.format == "html":
        text = readiness.html(report)
    else:
        text = readiness.table(report) + "\n"
    for error in errors:
        print(f"archwarden: error: {printable(error)}", file=sys.stderr)
    if args.output and args.output != "-":
        try:
            await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
        except OSError as exc:
            print(f"archwarden: error: {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 1 if errors else 0


def _run(args: argparse.Namespace) -> int:
    import os

    try:
        config = settings.load(args.config)
    except settings.ConfigError as exc:
        print(f"archwarden: error: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    import kopf

    # After KUBECONFIG is set: the kubernetes client reads it when first imported.
    from archwarden import handlers, workload_store

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        # Two INFO lines per admission (kopf's "Webhook ... succeeded" and aiohttp's access
        # log) cost more CPU than the decision itself under load; outcomes are in the metrics.
        for name in ("kopf.objects", "aiohttp.access", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    runtime = handlers.Runtime(
        config=config,
        dev=args.dev,
        dev_dir=Path(args.dev_dir),
        dev_name=args.dev_name,
        kubeconfig=args.kubeconfig,
        workloads=workload_store.WorkloadStore(
            config.excluded_namespaces, template_bytes=config.limits.template_bytes
        ),
    )
    handlers.watch_capacity(runtime, _capacity_sources(args.kubeconfig, config))
    kopf.run(
        clusterwide=True,
        standalone=True,  # replicas do not peer: each serves from its own live inventory
        memo=kopf.Memo(runtime=runtime),
        # kopf.run wants its NewType Identity (a str at run time), which kopf does not export.
        identity=_identity(),  # type: ignore[arg-type]
    )
    return 0


def _capacity_sources(kubeconfig: str | None, config: settings.Settings) -> list[Any]:
    """The capacity kinds to watch, found before kopf starts (kopf would wait forever on an
    index over a kind the API server does not serve)."""
    from archwarden import kube

    try:
        reader = kube.ApiReader(kube.load_api_client(kubeconfig))
    except Exception as exc:  # kopf reports the same missing credentials in its own words
        logging.getLogger("archwarden").warning("capacity sources not discovered: %s", exc)
        return []
    return asyncio.run(kube.available_sources(reader, config.capacity))


def _identity() -> str:
    """Who this process is, for kopf's logs and progress annotations.

    Left to itself, kopf asks ``getpass.getuser()``, which raises ``KeyError`` when the UID has
    no passwd entry and no USER/LOGNAME is set: exactly the image's UID 65532 in a pod. A
    crash there leaves the cluster unprotected (the webhooks fail open), so the identity comes
    from the pod's name (the chart sets POD_NAME), else the host name and process ID.
    """
    import os
    import socket

    pod = os.environ.get("POD_NAME") or os.environ.get("POD_ID")
    return pod or f"archwarden@{socket.gethostname()}/{os.getpid()}"


UNINSTALL_RELEASE = (
    "archwarden is being uninstalled (helm uninstall): its scheduling gate was released and "
    "this pod was not checked"
)
UNGATE_RELEASE = (
    "released by archwarden ungate (an emergency release): this pod was not checked against "
    "its images' platforms"
)


def _cluster(kubeconfig: str | None) -> Any:
    """The API client, or None after saying why there is none (one line)."""
    from archwarden import kube

    try:
        return kube.load_api_client(kubeconfig)
    except Exception as exc:  # no kubeconfig and not in a cluster
        print(f"archwarden: error: no cluster credentials: {type(exc).__name__}", file=sys.stderr)
        return None


def _release(client: Any, namespace: str | None, why: str) -> int:
    from archwarden import kube

    try:
        released, failures = kube.release_gates(client, namespace, why, kube.instance_name())
    except kube.GateReleaseError as exc:
        print(f"archwarden: error: {exc}", file=sys.stderr)
        return 1
    where = f"namespace {namespace}" if namespace else "all namespaces"
    print(f"released the scheduling gate of {len(released)} pods in {where}")
    for line in released:
        print(f"  {line}")
    for failure in failures:
        print(f"archwarden: error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _remove_webhooks(args: argparse.Namespace) -> int:
    from archwarden import kube

    client = _cluster(args.kubeconfig)
    if client is None:
        return 1
    try:
        for name in args.names:
            deleted = kube.remove_webhook_configurations(client, name)
            if args.ungate:
                # The policy first: no new pod is gated once nothing is left to release it.
                deleted += kube.remove_gate_policy(client, name)
            print(f"{name}: deleted {', '.join(deleted)}" if deleted else f"{name}: none left")
    except (kube.WebhookRemovalError, kube.GateReleaseError) as exc:
        print(f"archwarden: error: {exc}", file=sys.stderr)
        return 1
    return _release(client, None, UNINSTALL_RELEASE) if args.ungate else 0


def _ungate(args: argparse.Namespace) -> int:
    if not args.all_namespaces and not args.namespace:
        print(
            "archwarden: error: name a namespace (-n NAMESPACE) or --all-namespaces",
            file=sys.stderr,
        )
        return 2
    client = _cluster(args.kubeconfig)
    if client is None:
        return 1
    return _release(client, None if args.all_namespaces else args.namespace, UNGATE_RELEASE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archwarden",
        description="Keep workloads on nodes whose architecture their images support.",
    )
    parser.add_argument("--version", action="version", version=f"archwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser(
        "inspect",
        help="print the platforms each image supports, as the registry reports them",
        epilog="exit status: 0 all images answered (and, with --verify, every index entry "
        "agrees with its config); 1 an image could not be inspected; 3 --verify found an "
        "index entry whose config names another platform",
    )
    inspect.add_argument("images", nargs="+", metavar="REF", help="image references")
    inspect.add_argument("--json", action="store_true", help="print a JSON list")
    inspect.add_argument(
        "--verify",
        action="store_true",
        help="also read each index entry's image config and report entries whose config names "
        "another os/architecture/variant than the index (images that lie)",
    )
    _registry_flags(inspect)
    inspect.set_defaults(handler=_inspect)

    check = commands.add_parser(
        "check",
        help="run the admission policy offline over YAML manifests (for CI pipelines)",
    )
    check.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file, multi-document YAML; '-' reads stdin (repeatable)",
    )
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--platforms",
        metavar="LIST",
        help="node platforms to check against, e.g. linux/amd64,linux/arm64 (one node each); "
        "an entry starting with + is capacity an autoscaler can add, not a node: "
        "linux/amd64,+linux/arm64",
    )
    where.add_argument(
        "--from-cluster",
        action="store_true",
        help="use the nodes of the current cluster and what its autoscalers can add "
        "(Karpenter NodePools, Cluster API node groups that scale from zero in the namespaces "
        "--cluster-api-namespace names)",
    )
    check.add_argument("--kubeconfig", metavar="FILE", help="with --from-cluster")
    check.add_argument(
        "--cluster-api-namespace",
        action="append",
        default=[],
        metavar="NAME",
        help="with --from-cluster: count the Cluster API node groups of this namespace "
        "(repeatable; '*': every namespace; default none, as capacity.clusterAPI.namespaces)",
    )
    check.add_argument(
        "--mode",
        choices=["enforce", "warn", "audit"],
        default="enforce",
        help="policy mode (default enforce: exit 1 when a workload would be denied)",
    )
    check.add_argument(
        "--failure-policy",
        choices=["open", "closed"],
        default="closed",
        help="when an image cannot be inspected (default closed: counts as denied)",
    )
    _platform_flags(check)
    check.add_argument("--json", action="store_true", help="print a JSON list of verdicts")
    _registry_flags(check)
    check.set_defaults(handler=_check)

    report = commands.add_parser(
        "report",
        help="cluster readiness report: where each workload's images run, and which images "
        "keep workloads off arm64",
        epilog="exit status: 0 the report is complete; 1 it was written, but some objects or "
        "images could not be read (one line each on stderr; such workloads count as unknown); "
        "2 nothing was written (the cluster or a file could not be read)",
    )
    report.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (default: the usual lookup)"
    )
    report.add_argument(
        "--format", choices=["table", "json", "html"], default="table", help="default table"
    )
    report.add_argument(
        "-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout"
    )
    report.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NAME",
        help="only workloads in this namespace (repeatable; default every namespace)",
    )
    _platform_flags(report)
    _registry_flags(report)
    report.set_defaults(handler=_report)

    run = commands.add_parser("run", help="run the admission webhook and operator")
    run.add_argument("--config", metavar="FILE", help="configuration file (YAML)")
    run.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: the usual lookup)")
    run.add_argument(
        "--dev",
        action="store_true",
        help="generate a local CA and certificate and register the webhooks at "
        "https://127.0.0.1:PORT (local clusters only)",
    )
    run.add_argument(
        "--dev-dir",
        metavar="DIR",
        default=".archwarden-dev",
        help="where --dev writes its certificates",
    )
    run.add_argument(
        "--dev-name",
        metavar="NAME",
        default="archwarden.io",
        help="name of the webhook configurations --dev registers (default archwarden.io)",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=None, sync_handler=_run)

    remove = commands.add_parser(
        "remove-webhooks",
        help="delete archwarden's validating and mutating webhook configurations (run by the "
        "chart before uninstalling, so that failurePolicy Fail cannot outlive the pods)",
    )
    remove.add_argument("names", nargs="+", metavar="NAME", help="configuration names")
    remove.add_argument(
        "--ungate",
        action="store_true",
        help="also delete the MutatingAdmissionPolicy and binding of that name, then release "
        "archwarden's scheduling gate from every pod (each recorded in an Event)",
    )
    remove.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (default: the usual lookup)"
    )
    remove.set_defaults(handler=None, sync_handler=_remove_webhooks)

    ungate = commands.add_parser(
        "ungate",
        help="emergency: release archwarden's scheduling gate (archwarden.io/platforms) from "
        "pods unchecked, each recorded in a Warning Event SchedulingGateReleased",
    )
    where = ungate.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", metavar="NAMESPACE", help="pods of this namespace")
    where.add_argument(
        "-A", "--all-namespaces", action="store_true", help="pods of every namespace"
    )
    ungate.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (default: the usual lookup)"
    )
    ungate.set_defaults(handler=None, sync_handler=_ungate)
    return parser


def _platform_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arm64-runs-arm32",
        action="store_true",
        help="arm64 nodes run 32-bit arm images (platforms.arm64RunsArm32; default: they do not, "
        "or per node with the label archwarden.io/runs-arm32=true)",
    )
    parser.add_argument(
        "--no-amd64-runs-386",
        dest="amd64_runs_386",
        action="store_false",
        help="amd64 nodes do not run 386 images (platforms.amd64Runs386: false)",
    )
    taints = parser.add_mutually_exclusive_group()
    taints.add_argument(
        "--platform-taint",
        dest="platform_taints",
        action="append",
        type=_platform_taint,
        metavar="KEY[:EFFECT,...]",
        help="a platform taint (platforms.taints) pods whose images all run on the tainted arch "
        "are judged to tolerate (repeatable; default: kubernetes.io/arch with NoSchedule and "
        "PreferNoSchedule)",
    )
    taints.add_argument(
        "--no-platform-taints",
        dest="platform_taints",
        action="store_const",
        const=[],
        help="judge architecture taints as the scheduler does (platforms.taints: [])",
    )


def _platform_taint(text: str) -> policy.PlatformTaint:
    key, _, effects = text.partition(":")
    entry: dict[str, Any] = {"key": key}
    if effects:
        entry["effects"] = effects.split(",")
    try:
        return settings.platform_taint(entry, "--platform-taint")
    except settings.ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _registry_flags(parser: argparse.ArgumentParser) -> None:
    inspect = parser
    inspect.add_argument(
        "--docker-config",
        action="append",
        default=[],
        metavar="FILE",
        help="docker config.json / dockerconfigjson with pull credentials (repeatable)",
    )
    inspect.add_argument(
        "--image-credential-provider-config",
        metavar="PATH",
        help="the kubelet's CredentialProviderConfig (file or directory): run its credential "
        "provider plugins for matching images, as the node would",
    )
    inspect.add_argument(
        "--image-credential-provider-bin-dir",
        metavar="DIR",
        help="where the plugins named in that config are (the kubelet's flag of the same name)",
    )
    inspect.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="talk plain HTTP to this registry (repeatable)",
    )
    inspect.add_argument("--ca-file", metavar="FILE", help="PEM bundle to trust for registry TLS")
    inspect.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="REGISTRY=MIRROR",
        help="try MIRROR before REGISTRY (repeatable)",
    )
    inspect.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds per registry request, its whole answer included (default 10; a timed-out "
        "request is tried once more)",
    )


def _missing_dev_extra() -> str | None:
    """Why ``run --dev`` cannot work here, or None.

    ``--dev`` generates certificates with cryptography, which is an optional extra: the
    container image does not have it (PyPI has no s390x wheel). Said up front in one line rather
    than as a traceback from inside kopf's start-up.
    """
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return "run --dev needs the cryptography package: pip install 'archwarden[dev]'"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run" and args.dev:
        problem = _missing_dev_extra()
        if problem is not None:
            print(f"archwarden: error: {problem}", file=sys.stderr)
            return 2
    try:
        if args.handler is None:
            return int(args.sync_handler(args))
        return int(asyncio.run(args.handler(args)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
