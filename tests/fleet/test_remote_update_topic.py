"""Software update chunks follow the command destination when a remote config change moves it: an
in-process gateway with `[update]` and the two destinations of test_remoteconfig_destinations.py
(`legacy` first, so it carries the commands; `city`, where the fleet client talks) on a real
Mosquitto. One transfer is started, then moved twice before it completes:

- `legacy`'s topic prefix changed (`legacy` -> `district`);
- `legacy` disabled: commands, and the chunks, move to `city` (prefix `citynerve`).

`update_start` goes through the command destination, on its prefix (updates are its alone, refused
through another one); config changes go through `city`. After each move `update_start` (same id)
names the new chunk topic with what is still missing, and chunks published there are taken; the
whole bundle's hash then matches (nothing was lost or written twice on the way). The RemoteUpdate
was made once, with the first prefix: it kept naming and subscribing to `legacy/<gw>/update/...`,
so a platform sending to the documented `<prefix>/<gw>/update/<id>` of the command destination
never reached it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from citynerve.gateway.config import load_config
from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.fleet_update import Bundle, update_gateway
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.fleet.test_remoteconfig_destinations import GW, KEY, destinations

CHUNK = 4096


async def test_update_chunks_follow_the_command_destination_across_remote_changes(short_dir: Path) -> None:
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    key = short_dir / "centre.key"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    root = short_dir / "opt"
    (root / "releases").mkdir(parents=True)
    update = f'\n[update]\nroot = "{root}"\nservice = "process"\nmin_free_bytes = 0\n'
    data = os.urandom(12 * CHUNK + 5)  # 13 chunks
    b = Bundle(len(data), hashlib.sha256(data).hexdigest(), data, chunk_bytes=CHUNK)
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            path = short_dir / "gateway.toml"

            def document(*, legacy: bool = True, prefix: str = "legacy") -> str:
                ups = destinations(broker, key, legacy=legacy, city=True, legacy_prefix=prefix,
                                   classes=("read", "configure", "update"))  # fmt: skip
                return gateway_toml(host, port, extra=ups + update)

            path.write_text(document())
            async with (
                run_gateway(load_config(path)) as gw,
                FleetClient(
                    broker.host, broker.port, CommandSigner(hmac_key=KEY), key_id="ops-centre"
                ) as centre,
            ):
                await wait_for(
                    lambda: bool(gw.uplinks) and all(u.snapshot().connected for u in gw.uplinks), timeout_s=20
                )
                ru = gw.remote_update
                assert ru is not None

                async def start(topic: str, missing: list[list[int]]) -> None:
                    # through the command destination (its prefix is `topic`): updates are its alone
                    async with FleetClient(
                        broker.host,
                        broker.port,
                        CommandSigner(hmac_key=KEY),
                        key_id="ops-centre",
                        prefix=topic,
                    ) as via:
                        answer = await via.send(GW, "update_start", b.start_args("u-1"))
                    res: dict[str, Any] = answer.get("result") or {}
                    assert (answer["outcome"], res.get("topic"), res.get("missing")) == (
                        "ok", f"{topic}/{GW}/update/u-1", missing
                    ), answer  # fmt: skip

                async def send(topic: str, indexes: range, chunks: int) -> None:
                    for i in indexes:
                        await centre.publish(f"{topic}/{GW}/update/u-1/{i}", b.chunk(i))
                    await wait_for(lambda: ru.chunks == chunks, timeout_s=10)

                await start("legacy", [[0, 12]])
                await centre.publish(f"legacy/{GW}/update/u-1/table", b.table())
                await send("legacy", range(0, 4), 4)

                # legacy's prefix moved: the transfer goes on under the new one
                out = await centre.apply_config(GW, document(prefix="district"), version="v1",
                                                confirm_s=10, verdict_timeout_s=30)  # fmt: skip
                assert out["outcome"] == "confirmed", out
                await start("district", [[4, 12]])
                await send("district", range(4, 8), 8)

                # legacy disabled: commands and chunks on city now
                out = await centre.apply_config(GW, document(legacy=False, prefix="district"), version="v2",
                                                confirm_s=10, verdict_timeout_s=30)  # fmt: skip
                assert out["outcome"] == "confirmed", out
                assert gw.uplink is not None and gw.uplink.destination == "city"
                await start("citynerve", [[8, 12]])

                # the reference flow finishes it from the topic the gateway names
                done = await update_gateway(centre, GW, b, update_id="u-1", timeout_s=60)
                assert done.phase == "failed", done
                assert "not a readable .tar.gz" in done.reason, done  # the whole hash matched
                assert ru.chunks == 13 and gw.remote_update is ru
    finally:
        broker.close()
