"""``shoptwin capacity calibrate|validate|plan`` and ``shoptwin sweep``.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``;
those modules keep heavy imports (grpc, simpy, numpy, dask) inside ``run`` so that
``shoptwin --help`` stays fast.
"""

from __future__ import annotations

from services.cli.commands import CommandGroups
from simulator import sweep
from simulator.capacity import calibrate, plan, validate


def register(groups: CommandGroups) -> None:
    """Add ``capacity`` (with calibrate, validate, plan) and ``sweep`` at the top level."""
    parser = groups.top.add_parser(
        "capacity",
        help="calibrate the simulator from the real services, validate it, plan replicas",
        description="Capacity planning with a simulator checked against the real services: "
        "calibrate writes measured service times, validate compares predictions with real "
        "open-loop load, plan sizes worker processes per service for a scenario's SLOs.",
    )
    sub = parser.add_subparsers(dest="capacity_target", metavar="STEP", required=True)
    for name, module, help_text in (
        ("calibrate", calibrate, "measure the services and write a calibration file"),
        ("validate", validate, "predicted vs measured latency over an open-loop rate ladder"),
        ("plan", plan, "worker processes per service that meet SLOs at a scenario's peak"),
    ):
        step = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(step)
        step.set_defaults(handler=module.run)

    sweep_parser = groups.top.add_parser(
        "sweep",
        help="run a scenario in model mode over a parameter grid with replications",
        description="Model-mode runs over every combination of --param values, N replications "
        "each, on a local process pool or a Dask cluster (--scheduler); results with "
        "confidence intervals.",
    )
    sweep.add_arguments(sweep_parser)
    sweep_parser.set_defaults(handler=sweep.run)
