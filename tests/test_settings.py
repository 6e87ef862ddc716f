from pathlib import Path

import pytest

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.settings import Settings


def test_defaults_use_the_embedded_services():
    s = Settings.from_env({"KAFKAML_HOME": "/data/kml"})
    assert s.embedded_broker
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.db_url == "sqlite:////data/kml/kafkaml.db"
    assert s.artifacts_uri == "/data/kml/artifacts"
    assert s.control_topic == "KAFKA_ML_CONTROL_TOPIC"
    assert s.ray_address is None


def test_environment_overrides_and_security_passthrough():
    s = Settings.from_env(
        {
            "KAFKAML_BOOTSTRAP": "kafka:9093",
            "KAFKAML_DB": "postgresql+psycopg://u:p@db/kml",
            "RAY_ADDRESS": "ray://head:10001",
            "KAFKAML_CONTROL_TOPIC": "control",
            "KAFKAML_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKAML_KAFKA_SASL_MECHANISM": "PLAIN",
        }
    )
    assert not s.embedded_broker
    assert s.kafka_config() == {
        "bootstrap.servers": "kafka:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
    }
    assert s.db_url.startswith("postgresql+psycopg://")
    # The same settings travel to Ray jobs as environment variables.
    t = Settings.from_env(s.env())
    facts = (
        "db_url",
        "artifacts_uri",
        "bootstrap_servers",
        "kafka",
        "ray_address",
        "control_topic",
    )
    assert [getattr(t, f) for f in facts] == [getattr(s, f) for f in facts]


def test_home_is_a_path():
    assert isinstance(Settings.from_env({"KAFKAML_HOME": "/x"}).home, Path)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKAML_BROKER_PORT": "ninety"}, "KAFKAML_BROKER_PORT"),
        ({"KAFKAML_BROKER_PORT": "70000"}, "KAFKAML_BROKER_PORT"),
        ({"KAFKAML_CONTROL_TOPIC": "bad topic!"}, "KAFKAML_CONTROL_TOPIC"),
        ({"KAFKAML_VALIDATION_TIMEOUT": "-1"}, "KAFKAML_VALIDATION_TIMEOUT"),
    ],
)
def test_invalid_settings_name_the_variable(env, named):
    with pytest.raises(InvalidInput, match=named):
        Settings.from_env(env)


def test_the_ray_heads_environment_has_no_panel_password(monkeypatch, tmp_path):
    """Model code runs in Ray workers, which inherit the head's environment."""
    from kafkaml_ray.stack import ray_env

    monkeypatch.setenv("KAFKAML_UI_PASSWORD", "s3cret")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")  # the caller's cluster, not this head
    settings = Settings(home=tmp_path)
    env = ray_env(settings)
    assert "KAFKAML_UI_PASSWORD" not in env
    assert env["KAFKAML_DB"] == settings.db_url
    assert env["RAY_ADDRESS"] == f"127.0.0.1:{settings.ray_port}"  # its own, for "auto"
