"""An emulator of the Distributed LLM Service jobs API.

The gateway's default upstream when none is configured, and the upstream of end-to-end tests
and benchmarks. Job state is computed from time (no task per job); prompts may carry
``[[emulate:...]]`` directives (see :mod:`gateway.emulator.directives`) and the admin endpoints
under ``/emulator/`` inject service faults and report counters (see :mod:`gateway.emulator.app`).
"""

from gateway.emulator.app import EmulatedConnectionReset, create_emulator_app
from gateway.emulator.directives import Directives, parse_directives, reply_for
from gateway.emulator.engine import EmulatorConfig, Engine
from gateway.emulator.faults import Fault, FaultError
from gateway.emulator.server import (
    EmbeddedEmulator,
    add_emulator_arguments,
    config_from_args,
    run_emulator,
)

__all__ = [
    "Directives",
    "EmbeddedEmulator",
    "EmulatedConnectionReset",
    "EmulatorConfig",
    "Engine",
    "Fault",
    "FaultError",
    "add_emulator_arguments",
    "config_from_args",
    "create_emulator_app",
    "parse_directives",
    "reply_for",
    "run_emulator",
]
