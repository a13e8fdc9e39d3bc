"""`[upstream]` stays one destination named "default"; `[[upstream]]` is a list of named ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config import load_config
from tests.config.test_config_errors import HEAD


def test_a_single_upstream_table_is_the_default_destination(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(HEAD + '\n[upstream]\nbrokers = ["mqtt://127.0.0.1:1883"]\n')
    cfg = load_config(path)
    assert [d.id for d in cfg.destinations] == ["default"] and cfg.upstream is cfg.destinations[0]
    assert cfg.upstream.effective_client_id("gw") == "citynerve-gw"


def test_a_list_of_destinations_with_filters(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        HEAD
        + """
[[upstream]]
id = "city"
brokers = ["mqtt://127.0.0.1:1883"]

[[upstream]]
id = "fire"
brokers = ["mqtt://127.0.0.1:1884"]
topic_prefix = "fire"
filter = { lanes = ["event"], event_kinds = ["smoke", "fire"], min_severity = "major" }
"""
    )
    cfg = load_config(path)
    assert [d.id for d in cfg.destinations] == ["city", "fire"] and cfg.upstream.id == "city"
    assert cfg.destinations[1].filter.lanes == ("event",)
    assert cfg.destinations[1].effective_client_id("gw") == "citynerve-gw-fire"
    path.write_text(path.read_text().replace('id = "fire"', 'id = "city"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(i.path == "upstream[1].id" for i in err.value.issues)


def test_a_sparkplug_destination_next_to_a_json_one(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        HEAD
        + """
[[upstream]]
id = "city"
brokers = ["mqtt://127.0.0.1:1883"]

[[upstream]]
id = "scada"
brokers = ["mqtt://127.0.0.1:1884"]
encoding = "sparkplug-b"
sparkplug = { group_id = "district-7", primary_host_id = "scada-main" }
"""
    )
    cfg = load_config(path)
    sp = cfg.destinations[1]
    assert sp.encoding == "sparkplug-b" and sp.sparkplug.group_id == "district-7"
    assert sp.sparkplug.primary_host_id == "scada-main" and sp.sparkplug.data_qos == 1
    path.write_text(path.read_text().replace('group_id = "district-7"', 'group_id = "a/b"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(i.path == "upstream[1].sparkplug.group_id" for i in err.value.issues)


def test_e2e_ack_on_a_sparkplug_destination_is_refused(tmp_path: Path) -> None:
    # Sparkplug has no platform acks here: `e2e_ack = true` would be silently ignored, so the
    # loader refuses it with the key path; on a JSON v1 destination it stays valid.
    path = tmp_path / "gw.toml"
    path.write_text(
        HEAD
        + """
[[upstream]]
id = "city"
brokers = ["mqtt://127.0.0.1:1883"]
e2e_ack = true

[[upstream]]
id = "scada"
brokers = ["mqtt://127.0.0.1:1884"]
encoding = "sparkplug-b"
e2e_ack = true
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    paths = [i.path for i in err.value.issues]
    assert paths == ["upstream[1].e2e_ack"], err.value.issues
    assert "sparkplug-b" in err.value.issues[0].message


_TWO = '\n[[upstream]]\nid = "city"\nbrokers = ["mqtt://127.0.0.1:1883"]\n'
_TWO += '\n[[upstream]]\nid = "scada"\nbrokers = ["mqtt://127.0.0.1:1884"]\n'


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("topic_prefix", "p" * 65_600, "at most 128 characters"),  # the will topic broke paho
        ("topic_prefix", "p" * 129, "at most 128 characters"),
        ("client_id", "c\\u0000d", "control characters"),
        ("client_id", "c\\nd", "control characters"),
        ("username", "u" * 70_000, "at most 4096 characters"),
        ("username", "u\\u0000v", "control characters"),
    ],
)
def test_strings_that_would_break_every_connect_are_refused_with_the_key(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    """An over-long topic prefix or user name (over MQTT's 65,535 bytes) used to pass the config and
    fail every connect with an untyped struct.error from paho; a NUL or newline in the client id or
    user name made the broker drop every connect. Refused at load, naming the destination's key."""
    path = tmp_path / "gw.toml"
    path.write_text(HEAD + _TWO + f'{key} = "{value}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (issue,) = err.value.issues
    assert issue.path == f"upstream[1].{key}" and message in issue.message, issue


def test_strings_at_the_bounds_load(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    at_bounds = {"topic_prefix": "a/" * 63 + "bc", "client_id": "é" * 128, "username": "u" * 4096}
    path.write_text(HEAD + _TWO + "".join(f'{k} = "{v}"\n' for k, v in at_bounds.items()))
    scada = load_config(path).destinations[1]
    assert {k: getattr(scada, k) for k in at_bounds} == at_bounds


def _city_and_scada(city: str, scada: str) -> str:
    """Two destinations, the city's JSON v1 one and the district centre's Sparkplug one, with the
    keys given (TOML lines) added to each."""
    return (
        HEAD
        + f'\n[[upstream]]\nid = "city"\n{city}\n'
        + f'\n[[upstream]]\nid = "scada"\nencoding = "sparkplug-b"\n{scada}\n'
    )


BROKER = 'brokers = ["mqtt://broker.city.example:1883"]'


@pytest.mark.parametrize(
    ("city", "scada"),
    [
        # the city's block copied for the centre's (a broker that ACLs by client id)
        (f'{BROKER}\nclient_id = "gw-0001"', f'{BROKER}\nclient_id = "gw-0001"'),
        # one broker named in another case, another scheme, second in the failover list
        (
            f'{BROKER}\nclient_id = "gw-0001"',
            'brokers = ["mqtt://other.example:1883", "mqtts://Broker.City.Example:1883"]\n'
            'client_id = "gw-0001"',
        ),
        # the centre's client id written as the city's default one
        (BROKER, f'{BROKER}\nclient_id = "citynerve-gw-1-city"'),
    ],
    ids=["copied", "in-the-failover-list", "the-other-s-default"],
)
def test_two_destinations_on_one_broker_with_one_client_id_are_refused(
    tmp_path: Path, city: str, scada: str
) -> None:
    # A broker keeps one session per client id: the two took each other's session over for ever
    # (the Sparkplug host saw NBIRTH and NDEATH over and over), and `config check` said valid.
    path = tmp_path / "gw.toml"
    path.write_text(_city_and_scada(city, scada))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (issue,) = err.value.issues
    assert issue.path == "upstream[1].client_id", issue
    assert "'city' and 'scada'" in issue.message and "broker.city.example:1883" in issue.message


@pytest.mark.parametrize(
    ("city", "scada"),
    [
        (
            f'{BROKER}\nclient_id = "gw-0001"',
            'brokers = ["mqtt://broker.city.example:1884"]\nclient_id = "gw-0001"',
        ),
        (f'{BROKER}\nclient_id = "gw-0001"', f'{BROKER}\nclient_id = "gw-0001"\nenabled = false'),
        (BROKER, BROKER),  # the default client ids differ: citynerve-gw-1-city, citynerve-gw-1-scada
    ],
    ids=["another-port", "one-disabled", "defaults"],
)
def test_one_client_id_on_two_brokers_or_with_a_disabled_destination_loads(
    tmp_path: Path, city: str, scada: str
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(_city_and_scada(city, scada))
    assert [d.id for d in load_config(path).destinations] == ["city", "scada"]


def test_a_second_id_used_twice_is_named_by_its_place_in_the_file(tmp_path: Path) -> None:
    # The index was counted among the valid destinations only: past an invalid one it named another.
    path = tmp_path / "gw.toml"
    path.write_text(
        HEAD
        + '\n[[upstream]]\nid = "bad"\n'
        + _TWO
        + '\n[[upstream]]\nid = "city"\nbrokers = ["mqtt://h:1"]\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "upstream[3].id" in [i.path for i in err.value.issues], err.value.issues
