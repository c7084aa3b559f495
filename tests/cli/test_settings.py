"""Settings: precedence of flags, environment and config file, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import main
from services.runtime.config import ServerSettings
from services.runtime.settings import SettingsError, load_config_file, resolve


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = {"defaults": {"grace_s": 3.0, "port": 1111}, "echo": {"port": 2222}}
    env = {"SHOPTWIN_PORT": "3333"}
    settings = resolve(ServerSettings, section="echo", config=config, env={})
    assert settings.port == 2222 and settings.grace_s == 3.0
    settings = resolve(ServerSettings, section="echo", config=config, env=env)
    assert settings.port == 3333
    env["SHOPTWIN_ECHO_PORT"] = "4444"
    assert resolve(ServerSettings, section="echo", config=config, env=env).port == 4444
    settings = resolve(
        ServerSettings, section="echo", flags={"port": "5555"}, config=config, env=env
    )
    assert settings.port == 5555
    assert resolve(ServerSettings, section="echo", env={}).port == 0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"flags": {"port": "70000"}}, "port (--port): must be at most 65535"),
        ({"env": {"SHOPTWIN_ECHO_WORKERS": "two"}}, "workers (SHOPTWIN_ECHO_WORKERS)"),
        ({"env": {"SHOPTWIN_GRACE_S": "nan"}}, "grace_s (SHOPTWIN_GRACE_S): expected a finite"),
        ({"config": {"echo": {"log_level": "loud"}}}, "log_level (config file [echo] log_level)"),
        ({"config": {"echo": {"prot": 1}}}, "unknown setting(s) prot"),
        ({"flags": {"tls_cert": "/nonexistent.pem"}}, "tls_cert and tls_key"),
        ({"flags": {"auth_token": "short"}}, "auth_token: must be at least 16"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict[str, object], expected: str) -> None:
    kwargs.setdefault("env", {})
    with pytest.raises(SettingsError) as info:
        resolve(ServerSettings, section="echo", **kwargs)  # type: ignore[arg-type]
    assert expected in str(info.value)


def test_config_file_formats(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('[defaults]\nhost = "0.0.0.0"\n[echo]\nport = 7000\n')
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("defaults:\n  host: 0.0.0.0\necho:\n  port: 7000\n")
    assert load_config_file(toml) == load_config_file(yaml_file)
    broken = tmp_path / "broken.toml"
    broken.write_text("[echo\nport=1")
    with pytest.raises(SettingsError, match=r"--config: .*broken\.toml is not valid"):
        load_config_file(broken)
    with pytest.raises(SettingsError, match="--config: file not found"):
        load_config_file(tmp_path / "missing.toml")


def test_cli_reports_bad_settings_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "echo", "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert "port (--port): must be at most 65535" in err
    assert "Traceback" not in err


def test_cli_rejects_unknown_service_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "nosuch"])
    assert info.value.code == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err
    assert main(["up", "--services", "recommendation,nosuch"]) == 2
    assert "--services: unknown service 'nosuch'" in capsys.readouterr().err


def test_help_on_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["serve", "--help"],
        ["serve", "dispatch", "--help"],
        ["up", "--help"],
        ["bench", "--help"],
        ["train", "--help"],
        ["eval", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "usage: shoptwin" in capsys.readouterr().out
