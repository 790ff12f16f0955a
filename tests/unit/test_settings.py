from __future__ import annotations

from pathlib import Path

import pytest

from services.config_table import markdown
from services.dispatch.settings import DispatchSettings
from shared.errors import ConfigurationError
from shared.settings import CommonSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_table_documents_every_setting() -> None:
    assert markdown().strip() in DOC.read_text(), (
        "regenerate: ciclo config >> docs/configuration.md"
    )


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CICLO_DATA_DIR", str(tmp_path))
    settings = CommonSettings()
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path / 'ciclo.db'}"
    assert settings.resolved_bus_url() == f"sqlite:///{tmp_path / 'bus.db'}"
    assert settings.embedded_bus


def test_two_urls_switch_to_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLO_DATABASE_URL", "postgresql+asyncpg://db/ciclo")
    monkeypatch.setenv("CICLO_BUS_URL", "kafka://k1:9092,k2:9092")
    settings = CommonSettings()
    assert settings.resolved_database_url() == "postgresql+asyncpg://db/ciclo"
    assert not settings.embedded_bus


def test_unknown_bus_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLO_BUS_URL", "amqp://rabbit")
    with pytest.raises(ConfigurationError, match="CICLO_BUS_URL must start with"):
        CommonSettings()


def test_sendgrid_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLO_EMAIL_PROVIDER", "sendgrid")
    with pytest.raises(ConfigurationError, match="CICLO_SENDGRID_API_KEY is required"):
        DispatchSettings()


def test_production_refuses_the_local_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLO_ENV", "production")
    with pytest.raises(ConfigurationError, match="not the local sink"):
        DispatchSettings()


@pytest.mark.parametrize("url", ["ciclo.shop.example", "https://", "https://shop example", ""])
def test_a_public_url_links_cannot_be_built_on_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("CICLO_PUBLIC_URL", url)
    with pytest.raises(ConfigurationError, match="CICLO_PUBLIC_URL must be an absolute http"):
        DispatchSettings()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://localhost:8000", True),  # the development default
        ("https://127.0.0.1:8443", True),
        ("http://ciclo.shop.example", True),  # one-click unsubscribe needs HTTPS
        ("https://ciclo.shop.example/", False),
        ("https://shop.example/ciclo", False),
    ],
)
def test_production_needs_a_public_https_url(
    monkeypatch: pytest.MonkeyPatch, url: str, refused: bool
) -> None:
    monkeypatch.setenv("CICLO_ENV", "production")
    monkeypatch.setenv("CICLO_EMAIL_PROVIDER", "sendgrid")
    monkeypatch.setenv("CICLO_SENDGRID_API_KEY", "SG.test")
    monkeypatch.setenv("CICLO_UNSUBSCRIBE_SECRET", "0123456789abcdef")
    monkeypatch.setenv("CICLO_PUBLIC_URL", url)
    if refused:
        with pytest.raises(ConfigurationError, match="needs CICLO_PUBLIC_URL to be the https://"):
            DispatchSettings()
    else:
        assert DispatchSettings().public_url == url


def test_kafka_plaintext_by_default() -> None:
    from shared.bus.factory import kafka_connection

    assert kafka_connection(CommonSettings()) == {"security_protocol": "PLAINTEXT"}


def test_kafka_sasl_ssl_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from shared.bus.factory import kafka_connection

    monkeypatch.setenv("CICLO_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CICLO_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CICLO_KAFKA_SASL_USERNAME", "ciclo")
    monkeypatch.setenv("CICLO_KAFKA_SASL_PASSWORD", "s3cret")
    settings = CommonSettings()
    assert "s3cret" not in repr(settings)
    options = kafka_connection(settings)
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ciclo",
        "sasl_plain_password": "s3cret",
    }


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLO_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigurationError, match="CICLO_KAFKA_SASL_USERNAME"):
        CommonSettings()
