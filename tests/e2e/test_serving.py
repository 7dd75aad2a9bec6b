"""Serving without --dev: certificate files from the config, re-read when they change."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import pytest

from tests.cluster.cluster import LocalCluster
from tests.support.archwarden import ArchwardenProcess
from tests.support.pki import write_tls_files

pytestmark = pytest.mark.e2e


def handshake(port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except ssl.SSLError:
        return False


def test_rotated_certificate_files_are_served_without_a_restart(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    first = write_tls_files(tmp_path / "first")
    second = write_tls_files(tmp_path / "second")
    serving = tmp_path / "serving"
    serving.mkdir()
    shutil.copy(first.cert_file, serving / "tls.crt")
    shutil.copy(first.key_file, serving / "tls.key")
    process = ArchwardenProcess(
        tmp_path / "archwarden",
        cluster.kubeconfig,
        {
            "webhook": {
                "address": "127.0.0.1",
                "certFile": str(serving / "tls.crt"),
                "keyFile": str(serving / "tls.key"),
                "reloadSeconds": 0.5,
            }
        },
        dev=False,
    ).start()
    try:
        port = process.webhook_port
        cluster.wait_for(
            lambda: handshake(port, first.ca_file), timeout=20, message="the first certificate"
        )
        assert not handshake(port, second.ca_file)
        # Rotate as a Secret volume update would: key and certificate replaced in place.
        shutil.copy(second.key_file, serving / "tls.key")
        shutil.copy(second.cert_file, serving / "tls.crt")
        cluster.wait_for(
            lambda: handshake(port, second.ca_file),
            timeout=20,
            message=lambda: "the rotated certificate\n" + process.log_tail(),
        )
        assert not handshake(port, first.ca_file)
    finally:
        process.stop()


NO_PASSWD_UID = 65532


def test_starts_as_a_uid_without_a_passwd_entry(cluster: LocalCluster, tmp_path: Path) -> None:
    # The image runs as UID 65532 with no passwd entry and no USER/LOGNAME; kopf's default
    # identity (getpass.getuser()) raised KeyError there and the webhook never came up.
    import pwd

    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
    process = ArchwardenProcess(
        tmp_path,
        cluster.kubeconfig,
        {"mode": "audit"},
        dev_name="uid.archwarden.io",
        uid=NO_PASSWD_UID,
    )
    try:
        process.start()  # raises with the log when the process exits or never becomes ready
    finally:
        process.stop()
    assert "getpwuid" not in process.log_tail()
