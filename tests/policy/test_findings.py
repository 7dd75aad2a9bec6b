"""Tag drift, pending pods and exec format errors: the pure findings."""

from __future__ import annotations

from archwarden import platforms, policy

AMD64 = platforms.parse("linux/amd64")
ARM64 = platforms.parse("linux/arm64")
ARMV7 = platforms.parse("linux/arm/v7")
S390X = platforms.parse("linux/s390x")


def test_lost_platforms_are_only_those_needed() -> None:
    nodes = [platforms.parse("linux/arm64"), platforms.parse("linux/amd64")]
    assert policy.lost_platforms((AMD64, ARM64), (AMD64,), nodes) == ("linux/arm64",)
    assert policy.lost_platforms((AMD64, ARM64), (AMD64,), nodes[1:]) == ()
    # Where arm64 nodes run arm/v7 images, an index trading arm64 for arm/v7 lost nothing there.
    arm32 = platforms.Fallbacks(arm32_on_arm64=True)
    assert policy.lost_platforms((AMD64, ARM64), (AMD64, ARMV7), nodes, arm32) == ()
    assert policy.lost_platforms((AMD64, ARM64), (AMD64, ARMV7), nodes) == ("linux/arm64",)


def test_pending_is_explained_only_when_no_node_platform_fits() -> None:
    nodes = {platforms.parse("linux/amd64"), platforms.parse("linux/arm64")}
    multi = [("reg/web:1", (AMD64, ARM64))]
    assert policy.pending_message(multi, nodes) is None
    assert policy.pending_message(multi, nodes, ("arm64",)) is None
    message = policy.pending_message(multi, nodes, ("s390x",))
    assert message == (
        "no node matches this pod's architecture: image reg/web:1 supports linux/amd64 and "
        "linux/arm64 only; the pod asks for s390x; the nodes are linux/amd64 and linux/arm64"
    )
    only_s390x = policy.pending_message([("reg/mf:1", (platforms.parse("linux/s390x"),))], nodes)
    assert only_s390x is not None and "supports linux/s390x only" in only_s390x


# Real shapes, from the sources that write them (see policy/_findings.py for where each comes
# from). Start failures the runtimes report, which the kubelet gives its own reasons:
GVISOR_START = (  # runsc loads the ELF itself, so the format's refusal fails the start
    'failed to start containerd task "4b1c": OCI runtime start failed: starting container: '
    "starting root container: starting sandbox: creating process: failed to load /app: "
    "exec format error: unknown"
)
RUNC_CREATE = (
    "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
    'runc create failed: unable to start container process: exec: "/app": exec format error: '
    "unknown"
)
# The lines runc and crun write on the container's stderr when execve fails after the start
# (the kubelet copies them into the message with terminationMessagePolicy FallbackToLogsOnError).
RUNC_LINE = "exec /catatonit: exec format error\n"
RUNC_1_0_LINE = "standard_init_linux.go:228: exec user process caused: exec format error\n"
RUNC_RC_LINE = 'standard_init_linux.go:211: exec user process caused "exec format error"\n'
CRUN_LINE = "exec container process `/usr/local/bin/provider`: Exec format error\n"
CRUN_JSON_LINE = (
    '{"msg":"exec container process `/opt/venv/bin/vllm`: Exec format error",'
    '"level":"error","time":"2025-12-04T15:15:35.826445Z"}\n'
)


def test_an_exec_format_error_reported_by_the_runtime_is_runtime_evidence() -> None:
    docker_gvisor = (  # as dockerd relayed it (quoted in Chromium's remote execution client)
        "OCI runtime start failed: starting container: starting root container: starting "
        "sandbox: creating process: failed to load /b/bin/x86_64-nacl-g++: exec format error: "
        "unknown"
    )
    for reason, message, path in [
        ("StartError", GVISOR_START, "/app"),  # containerd's terminated reason, failed start
        ("StartError", RUNC_CREATE, "/app"),
        ("RunContainerError", GVISOR_START, "/app"),  # the kubelet's waiting reason
        ("CreateContainerError", RUNC_CREATE, "/app"),
        ("ContainerCannotRun", docker_gvisor, "/b/bin/x86_64-nacl-g++"),
    ]:
        found = policy.exec_format_finding(reason, message)
        runtime = policy.ExecEvidence.RUNTIME
        assert found == policy.ExecFormatFinding(runtime, reason, path), message
    # The runtime failed for another reason: nothing about formats.
    not_found = (
        "failed to create containerd task: failed to create shim task: OCI runtime create "
        'failed: runc create failed: unable to start container process: exec: "namespace": '
        "executable file not found in $PATH: unknown"
    )
    assert policy.exec_format_finding("StartError", not_found) is None
    # The node's own binaries (a shim, a hook) refused by its kernel: nothing about the image.
    for node_side in [
        "failed to create containerd task: failed to start shim: start failed: fork/exec "
        "/usr/bin/containerd-shim-runc-v2: exec format error: unknown",
        "failed to create containerd task: failed to create shim task: OCI runtime create "
        "failed: runc create failed: unable to start container process: error during container "
        "init: error running hook #0: fork/exec /usr/bin/nvidia-container-runtime-hook: exec "
        "format error: unknown",
    ]:
        assert policy.exec_format_finding("StartError", node_side) is None
    assert policy.exec_format_finding("CrashLoopBackOff", "back-off 10s restarting") is None


def test_the_runtimes_log_line_is_only_log_evidence() -> None:
    log = policy.ExecEvidence.LOG
    for message, runtime, path in [
        (RUNC_LINE, "runc", "/catatonit"),
        (RUNC_1_0_LINE, "runc", ""),
        (RUNC_RC_LINE, "runc", ""),
        (CRUN_LINE, "crun", "/usr/local/bin/provider"),
        (CRUN_JSON_LINE, "crun", "/opt/venv/bin/vllm"),
    ]:
        found = policy.exec_format_finding("Error", message)
        assert found == policy.ExecFormatFinding(log, runtime, path), message


def test_a_container_saying_exec_format_error_itself_is_no_finding() -> None:
    for reason, message in [
        # echo "exec format error" > /dev/termination-log; exit 1
        ("Error", "exec format error\n"),
        # A shell in the image failing to run a binary of the image: that binary's format is
        # not the image's platform, which is all archwarden knows.
        ("Error", "/bin/sh: 1: ./tool: Exec format error\n"),
        # A runtime's start failure, written by the container into its own termination log.
        ("Error", RUNC_CREATE),
        ("Error", GVISOR_START),
        # runc's line among the container's own output: the container ran.
        ("Error", "starting\n" + RUNC_LINE),
        ("Error", RUNC_LINE + "done\n"),
        # runc's line at exit 0 (or killed): runc exits 1 or 255 when execve fails.
        ("Completed", RUNC_LINE),
        ("OOMKilled", RUNC_LINE),
        # A control character is not part of a path runc prints.
        ("Error", "exec /a\x1b[2J: exec format error"),
    ]:
        assert policy.exec_format_finding(reason, message) is None, (reason, message)


def test_exec_format_events_say_what_the_evidence_is() -> None:
    amd64_node = platforms.parse("linux/amd64")
    by_runtime = policy.exec_format_finding("StartError", GVISOR_START)
    assert by_runtime is not None
    said = policy.exec_format_message("c", "reg/x:1", by_runtime, (S390X,), "n1", amd64_node)
    assert said == (
        "container c (image reg/x:1) failed with exec format error on node n1 (linux/amd64), "
        "as the container runtime reported (StartError): the image says it supports "
        "linux/s390x only"
    )
    lied = policy.exec_format_message("c", "reg/x:1", by_runtime, (AMD64,), "n1", amd64_node)
    assert lied.endswith("so its binary does not match what the image says")
    unknown = policy.exec_format_message("c", "reg/x:1", by_runtime, None, "n1", None)
    assert unknown.endswith(
        "on node n1, as the container runtime reported (StartError): its platforms are not "
        "known to archwarden"
    )
    unread = policy.exec_format_message(
        "c", "reg/x:1", by_runtime, None, "n1", None, "registry reg: 503"
    )
    assert unread.endswith(": its platforms could not be read: registry reg: 503")

    in_log = policy.exec_format_finding("Error", RUNC_LINE)
    assert in_log is not None
    said = policy.exec_format_message("c", "reg/x:1", in_log, (S390X,), "n1", amd64_node)
    assert said == (
        "container c (image reg/x:1) on node n1 (linux/amd64) ended with a log line saying "
        "exec format error for its entrypoint /catatonit, as runc writes when the kernel "
        "refuses the entrypoint's binary; the evidence is only this log line, which the "
        "container could have written itself: the image says it supports linux/s390x only"
    )
    lied = policy.exec_format_message("c", "reg/x:1", in_log, (AMD64,), "n1", amd64_node)
    assert lied.endswith(
        "supports linux/amd64 only, so if the line is runc's, its binary does not match what "
        "the image says"
    )
    old = policy.exec_format_finding("Error", RUNC_1_0_LINE)
    assert old is not None
    said = policy.exec_format_message("c", "reg/x:1", old, None, "n1", None)
    assert "exec format error for its entrypoint, as runc writes" in said


def test_a_log_lines_long_entrypoint_is_shortened_in_the_event() -> None:
    found = policy.exec_format_finding("Error", f"exec /{'a' * 400}: exec format error")
    assert found is not None and len(found.path) == 401
    said = policy.exec_format_message("c", "reg/x:1", found, None, "n1", None)
    assert len(said) < 500 and f"/{'a' * 40}" in said and "..." in said
