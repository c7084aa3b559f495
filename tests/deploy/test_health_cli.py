"""`shoptwin health`, and the compose service command with its health check run for real."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.main import build_parser, main
from services.runtime.process import free_port, wait_serving
from services.runtime.testing import running_service
from tests.deploy import manifests as m


def run_health(argv: list[str]) -> int:
    args = build_parser().parse_args(["health", *argv])
    return int(args.handler(args))


async def health(*argv: str) -> int:
    # The blocking health call runs in a thread so that the in-process server keeps serving.
    return await asyncio.to_thread(run_health, list(argv))


async def test_serving_server_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_service("telemetry") as svc:
        name = m.grpc_service_name("telemetry")
        assert await health(svc.target, "--service", name, "--timeout", "2") == 0
        assert await health(svc.target) == 0
    assert "SERVING" in capsys.readouterr().out


async def test_not_serving_and_unknown_service_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_service("telemetry") as svc:
        assert await health(svc.target, "--service", "shoptwin.v1.NoSuchService") == 1
        assert "no answer" in capsys.readouterr().err
        await svc.server.health.enter_graceful_shutdown()
        assert await health(svc.target) == 1
        assert "NOT_SERVING" in capsys.readouterr().err


def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", f"127.0.0.1:{free_port()}", "--timeout", "0.5"]) == 1
    assert "no answer within 0.5 s" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "601"])
def test_bad_timeout_names_the_flag(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    assert main(["health", "127.0.0.1:1", "--timeout", bad]) == 2
    assert "--timeout" in capsys.readouterr().err


def test_missing_ca_file_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "127.0.0.1:1", "--tls-ca", str(tmp_path / "ca.pem")]) == 2
    assert "--tls-ca: file not found" in capsys.readouterr().err


def local(argv: list[str]) -> list[str]:
    """A container command as this checkout runs it: `shoptwin` is `python -m services.cli.main`."""
    assert argv[0] == "shoptwin"
    return [sys.executable, "-m", "services.cli.main", *argv[1:]]


def test_compose_command_and_health_check_work_on_a_real_process(tmp_path: Path) -> None:
    """telemetry's compose command, environment and health check, with the port moved to a free
    one and the bind address to loopback; nothing else changed."""
    compose = m.compose()
    service = compose["services"]["telemetry"]
    command = list(service["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    port, metrics_port = free_port(), free_port()
    image_env = m.dockerfile_env(m.dockerfile_stages()[-1][1])
    env = {
        **os.environ,
        **{k: v for k, v in image_env.items() if k.startswith("SHOPTWIN_")},
        **service.get("environment", {}),
        "SHOPTWIN_DATA_DIR": str(tmp_path),
        "SHOPTWIN_TELEMETRY_PORT": str(port),
        "SHOPTWIN_TELEMETRY_METRICS_PORT": str(metrics_port),
    }
    check = [a.replace(":50054", f":{port}") for a in service["healthcheck"]["test"][1:]]
    process = subprocess.Popen(
        local(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_serving(f"127.0.0.1:{port}", timeout_s=60, process=process)
        result = subprocess.run(
            local(check), check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "SERVING" in result.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    result = subprocess.run(
        local(check), check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "no answer" in result.stderr


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (its own CA) and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_health_check_as_the_tls_overlay_runs_it(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    async with running_service("telemetry", tls_cert=cert, tls_key=key) as svc:
        # The overlay's probe: CA file and the certificate's name, target 127.0.0.1.
        tls = ["--tls-ca", str(cert), "--tls-server-name", "localhost"]
        assert await health(svc.target, *tls) == 0
        # Plaintext against a TLS port gets no answer: why the overlay replaces native probes.
        assert await health(svc.target, "--timeout", "1") == 1
        # A certificate checked against the wrong name is refused.
        assert await health(svc.target, "--tls-ca", str(cert), "--tls-server-name", "x") == 1
