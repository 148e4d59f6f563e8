"""The environment read once into Settings: defaults, every variable, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.errors import SettingsError
from reconciler.settings import Settings


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert (s.config_path, s.bind, s.port, s.http_threads, s.malloc_arenas) == (
        "sites.toml",
        "0.0.0.0",
        8080,
        64,
        2,
    )
    assert s.github.api_url == "https://api.github.com" and not s.github.authenticated
    assert s.github.web_url == "https://github.com"
    assert not s.lease_active and s.metadata_host is None and s.log_level == "info"


def test_every_variable(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN KEY-----")
    s = Settings.from_env(
        {
            "RECONCILER_CONFIG": "/etc/sites.toml",
            "GITHUB_API_URL": "https://ghe.example.com/api/v3/",
            "GITHUB_APP_ID": "12",
            "GITHUB_APP_PRIVATE_KEY_FILE": str(key),
            "GITHUB_APP_INSTALLATION_ID": "34",
            "RECONCILER_GITHUB_STRATEGY": "rest",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
            "POD_NAME": "reconciler-0",
            "POD_NAMESPACE": "ops",
            "RECONCILER_LEASE_NAMESPACE": "leases",
            "RECONCILER_INSECURE_REGISTRIES": "localhost:5000,reg.local",
            "DOCKER_CONFIG": "/docker",
            "BIND": "127.0.0.1",
            "PORT": "9000",
            "RECONCILER_HTTP_THREADS": "8",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "DEBUG",
            "LOGNAME": "ops",
        }
    )
    assert s.config_path == "/etc/sites.toml"
    assert s.github.api_url == "https://ghe.example.com/api/v3"
    assert s.github.web_url == "https://ghe.example.com"
    assert s.github.app_private_key == "-----BEGIN KEY-----"
    assert (s.github.app_installation_id, s.github.strategy) == (34, "rest")
    assert s.in_cluster and s.metadata_host == "metadata.google.internal"
    assert (s.identity, s.lease_namespace, s.lease_active) == ("reconciler-0", "leases", True)
    assert s.insecure_registries == ("localhost:5000", "reg.local")
    assert (s.bind, s.port, s.http_threads, s.log_format, s.log_level) == (
        "127.0.0.1",
        9000,
        8,
        "text",
        "debug",
    )
    assert not Settings.from_env({"POD_NAMESPACE": "ops", "RECONCILER_LEASE": "off"}).lease_active
    assert s.user == "ops" and Settings.from_env({"USER": "ana", "LOGNAME": "x"}).user == "ana"
    assert Settings.from_env({}).lease_seconds == 60
    assert Settings.from_env({"RECONCILER_LEASE_SECONDS": "4"}).lease_seconds == 4
    assert Settings.from_env({}).apply_concurrency == 32
    assert Settings.from_env({"RECONCILER_APPLY_CONCURRENCY": "4"}).apply_concurrency == 4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT must be a whole number"),
        ({"RECONCILER_HTTP_THREADS": "0"}, "RECONCILER_HTTP_THREADS must be from 1 to"),
        ({"RECONCILER_APPLY_CONCURRENCY": "0"}, "RECONCILER_APPLY_CONCURRENCY must be from 1"),
        # #23: values serve cannot use are refused at start, naming the variable
        ({"PORT": "70000"}, "PORT must be from 1 to 65535"),
        ({"PORT": "99999999999999999999"}, "PORT must be from 1 to 65535"),
        ({"PORT": "٨٠٨٠"}, "PORT must be a whole number"),
        ({"BIND": "not-an-address"}, "BIND must be an IP address"),
        ({"BIND": "999.999.999.999"}, "BIND must be an IP address"),
        ({"RECONCILER_HTTP_THREADS": "10000000"}, "RECONCILER_HTTP_THREADS must be from 1 to 1024"),
        ({"RECONCILER_HTTP_CONNECTIONS": "10000000"}, "RECONCILER_HTTP_CONNECTIONS must be from"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be info or debug"),
        ({"PUBSUB_SUBSCRIPTION": "garbage"}, "PUBSUB_SUBSCRIPTION must be a subscription's full"),
        ({"PUBSUB_GCR_SUBSCRIPTION": "projects/p"}, "PUBSUB_GCR_SUBSCRIPTION must be a"),
        ({"GITHUB_API_URL": "not a url"}, "GITHUB_API_URL must be an http"),
        ({"GITHUB_API_URL": "ftp://ghe.example.com"}, "GITHUB_API_URL must be an http"),
        ({"GITHUB_API_URL": "https://ghe.example.com:99999"}, "GITHUB_API_URL must be an http"),
        ({"RECONCILER_LOOKBACK": "²"}, "RECONCILER_LOOKBACK must be a whole number"),
        ({"GITHUB_APP_INSTALLATION_ID": "²"}, "GITHUB_APP_INSTALLATION_ID must be a number"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json or text"),
        ({"RECONCILER_GITHUB_STRATEGY": "soap"}, "RECONCILER_GITHUB_STRATEGY must be one of"),
        ({"GITHUB_APP_ID": "1"}, "a GitHub App needs all three"),
        ({"GITHUB_APP_INSTALLATION_ID": "x"}, "GITHUB_APP_INSTALLATION_ID must be a number"),
        (
            {"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY_FILE": "/nonexistent/key.pem"},
            "cannot read",
        ),
        ({"RECONCILER_TRIGGER_TOKEN": "s3cret"}, "RECONCILER_TRIGGER_TOKEN is 6 bytes; a token"),
        ({"RECONCILER_TRIGGER_TOKEN": "x" * 31}, "must be at least 32 bytes"),
        ({"RECONCILER_READ_TOKEN": "r" * 31}, "RECONCILER_READ_TOKEN is 31 bytes"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_event_subscriptions_and_the_webhook_secret() -> None:
    assert (
        Settings.from_env({}).subscriptions == () and Settings.from_env({}).webhook_secret is None
    )
    s = Settings.from_env(
        {
            "PUBSUB_GCR_SUBSCRIPTION": "projects/p/subscriptions/gcr",
            "PUBSUB_SUBSCRIPTION": "projects/p/subscriptions/jobs",
            "PUBSUB_CLOUD_BUILD_SUBSCRIPTION": "",
            "GITHUB_WEBHOOK_SECRET": "s",
        }
    )
    assert s.subscriptions == (
        ("scheduler", "projects/p/subscriptions/jobs"),
        ("gcr", "projects/p/subscriptions/gcr"),
    )
    assert s.webhook_secret == "s"


def test_tokens_and_open_reads() -> None:
    trigger, read = "t" * 32, "r" * 40
    s = Settings.from_env({"RECONCILER_TRIGGER_TOKEN": trigger, "RECONCILER_READ_TOKEN": read})
    assert (s.trigger_token, s.read_token, s.reads_open) == (trigger, read, False)
    s = Settings.from_env({"RECONCILER_TRIGGER_TOKEN": trigger, "RECONCILER_READ_TOKEN": "open"})
    assert (s.trigger_token, s.read_token, s.reads_open) == (trigger, None, True)
    assert Settings.from_env({"RECONCILER_TRIGGER_TOKEN": ""}).trigger_token is None


def test_the_app_key_file_is_read_only_for_a_github_app(tmp_path: Path) -> None:
    # The manifests always set GITHUB_APP_PRIVATE_KEY_FILE; with a plain token it may not exist.
    missing = str(tmp_path / "github-app" / "private-key.pem")
    s = Settings.from_env({"GITHUB_TOKEN": "ghp_x", "GITHUB_APP_PRIVATE_KEY_FILE": missing})
    assert s.github.token == "ghp_x" and s.github.app_private_key is None
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    s = Settings.from_env(
        {
            "GITHUB_APP_ID": "1",
            "GITHUB_APP_INSTALLATION_ID": "2",
            "GITHUB_APP_PRIVATE_KEY_FILE": str(key),
        }
    )
    assert s.github.app_private_key == key.read_text()


@pytest.mark.parametrize("value", ["-1", "x", "101", "2.5"])
def test_lookback_must_be_a_small_whole_number(value: str) -> None:
    with pytest.raises(SettingsError, match="RECONCILER_LOOKBACK"):
        Settings.from_env({"RECONCILER_LOOKBACK": value})
    assert Settings.from_env({"RECONCILER_LOOKBACK": "0"}).github.lookback == 0
    assert Settings.from_env({}).github.lookback == 20
