"""The health check of a remote config change judges the destinations meant to run, and the one
the change came through: an in-process gateway with two JSON v1 destinations on a real Mosquitto
(`legacy` first, under its own topic prefix; `city`, where the fleet client talks), changed from
afar through `city`.

- any change: its verdict (a second result) comes back through `city`, not the first destination.
- `legacy` disabled: confirmed (a disabled destination runs nothing; `city` carries commands). It
  was reverted, "uplink not connected": the health check judged the first destination.
- `city` disabled and `legacy` enabled again: refused up front (`bad_value`), nothing written. The
  gateway would be connected (to `legacy`), but nothing would reach the platform that sent the
  change any more. It was applied and reverted by the health check; the refusal names what the
  change would do (tests/integration/test_run_remoteconfig_lockout.py).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from citynerve.gateway.config import load_config
from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for

GW = "gw-test-0001"
KEY = bytes.fromhex("42" * 32)


def destinations(
    broker: MosquittoBroker,
    key: Path,
    *,
    legacy: bool,
    city: bool,
    legacy_prefix: str = "legacy",
    classes: tuple[str, ...] = ("read", "configure"),
    city_key: Path | None = None,
) -> str:
    """`legacy` then `city` (topic prefix `citynerve`, where the fleet client talks), one key each
    (`key`, or `city_key` for `city`), both with the id `ops-centre`."""
    granted = ", ".join(f'"{c}"' for c in classes)

    def one(dest: str, prefix: str, enabled: bool, key: Path) -> str:
        return textwrap.dedent(
            f"""
            [[upstream]]
            id = "{dest}"
            enabled = {str(enabled).lower()}
            topic_prefix = "{prefix}"
            brokers = ["{broker.url}"]
            backoff = {{ initial_s = 0.1, max_s = 0.5 }}
            [upstream.commands]
            enabled = true
            [[upstream.commands.keys]]
            id = "ops-centre"
            hmac_key_file = "{key}"
            classes = [{granted}]
            """
        )

    return one("legacy", legacy_prefix, legacy, key) + one("city", "citynerve", city, city_key or key)


async def test_the_health_check_judges_enabled_destinations_and_the_one_the_change_came_through(
    short_dir: Path,
) -> None:
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    key = short_dir / "centre.key"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            path = short_dir / "gateway.toml"

            def document(*, legacy: bool, city: bool) -> str:
                return gateway_toml(host, port, extra=destinations(broker, key, legacy=legacy, city=city))

            path.write_text(document(legacy=True, city=True))
            async with (
                run_gateway(load_config(path)) as gw,
                FleetClient(
                    broker.host, broker.port, CommandSigner(hmac_key=KEY), key_id="ops-centre"
                ) as centre,
            ):
                # Not before the uplinks are made (the control socket answers first): all() of none.
                await wait_for(
                    lambda: bool(gw.uplinks) and all(u.snapshot().connected for u in gw.uplinks), timeout_s=20
                )

                # a change through `city` while `legacy` comes first: the verdict comes back
                # through `city` (it went to `legacy`'s topics, which this platform never hears)
                out = await centre.apply_config(
                    GW, document(legacy=True, city=True) + "# v1\n", version="v1", verdict_timeout_s=30
                )
                assert out["outcome"] == "confirmed", out

                # the first destination disabled: the enabled one carries on, confirmed
                out = await centre.apply_config(
                    GW, document(legacy=False, city=True), version="v2", confirm_s=10, verdict_timeout_s=30
                )
                assert out["outcome"] == "confirmed", out
                assert gw.uplink is not None and gw.uplink.destination == "city"
                assert gw.remote_config is not None and gw.remote_config.current["version"] == "v2"

                # the destination the change came through disabled, another one enabled: the
                # gateway would be connected, but not to the platform that sent it: refused
                out = await centre.apply_config(
                    GW, document(legacy=True, city=False), version="v3", confirm_s=5, verdict_timeout_s=30
                )
                assert (out["outcome"], out["answer"]["reason"]) == ("rejected", "bad_value"), out
                assert "disables destination 'city'" in out["answer"]["detail"], out
                assert gw.remote_config.current["version"] == "v2"
                assert path.read_text() == document(legacy=False, city=True)
    finally:
        broker.close()
