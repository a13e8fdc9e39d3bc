"""`citynerve demo`."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from citynerve.gateway.api import GatewayError
from citynerve.gateway.cli import _common
from citynerve.gateway.cli._common import FiniteRange, fail
from citynerve.gateway.cli._groups import main
from citynerve.gateway.logs import setup_logging

if TYPE_CHECKING:
    from citynerve.hil.demo import DemoSummary

# What the `sim` extra adds (pyproject.toml): the runtime install does not have them.
SIM_PACKAGES = ("bumble", "amqtt")


@main.command()
@click.option(
    "--duration",
    "duration_s",
    type=FiniteRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to run; 0 runs until Ctrl-C.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Where the demo's config, outbox and platform database go.",
)
@click.option(
    "--scenario",
    "scenario_name",
    type=click.Choice(["building", "street"]),
    default="building",
    show_default=True,
    help="building: meters, smoke detectors, fire panel, meter box detector, entrance door, bed-foot "
    "sensor, manhole covers; street: hydrant, fire lane, litter bin, entrance, curtain wall panel, "
    "bed-foot sensor, meter box detector, street lamp.",
)
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "embedded"]),
    default="auto",
    show_default=True,
    help="The local MQTT broker: Mosquitto when installed (auto), else the embedded pure-Python amqtt "
    "broker (MQTT 3.1.1; no root needed).",
)
def demo(duration_s: float, workdir: Path, scenario_name: str, broker: str) -> None:
    """Run the gateway against a simulated building or street (no hardware, no root).

    Simulated devices answer on real protocols; a local MQTT broker and the reference platform
    consumer show what the city platform receives.
    """
    missing = [name for name in SIM_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            f"the demo needs {', '.join(missing)}: on a gateway installed from a release bundle run its "
            "install.py again with --sim; elsewhere pip install 'citynerve[sim]'"
        )  # plain text
    setup_logging("warning", "text")
    logging.getLogger("citynerve").setLevel(logging.WARNING)
    from citynerve.hil.demo import run_demo

    async def until_sigterm() -> DemoSummary:
        # SIGTERM (a service manager, `timeout`, `kill`) stops it as Ctrl-C does: the demo's cleanup
        # runs and stops its Mosquitto, which was left listening, adopted by init.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_demo(duration_s, workdir, _common.console, scenario_name, broker)

    try:
        summary = asyncio.run(until_sigterm())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return
    except GatewayError as err:
        fail(str(err))
    if summary.readings_arrived == 0 or summary.gaps:
        raise SystemExit(1)
