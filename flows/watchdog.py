"""The Prefect automation that marks a flow run Crashed when it stops sending heartbeats.

A flow run whose worker (or machine) dies mid-stage would otherwise stay `Running` for ever,
and, since the work pool runs one flow run at a time (scripts/prefect_up.sh), every later
run would wait behind it. Deployment flow runs send a heartbeat event every
PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (prefect_up.sh starts the worker with it set);
this automation (Prefect's documented zombie-flow recipe) changes a run that has sent no
heartbeat, and has not ended, for `after_s` seconds to Crashed, with a message that says
what happened and what a rerun does.

    python -m flows.watchdog --after 90     # create or update it (prefect_up.sh does)
"""

from __future__ import annotations

import argparse
from datetime import timedelta

NAME = "fsrfer: crash unresponsive flow runs"
HEARTBEAT = "prefect.flow-run.heartbeat"
ENDED = ("prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
         "prefect.flow-run.Crashed")


def crash_message(after_s: int) -> str:
    return (f"No heartbeat for {after_s} s: the worker or its machine stopped mid-run (killed, out of memory, "
            f"powered off). Rerun the deployment: the stages DVC recorded as done are skipped, no half-written "
            f"output is used, and a Ray training stage resumes from its last checkpoint.")


def ensure_automation(after_s: int = 90):
    """Create the automation, or update it to `after_s`; returns it."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    trigger = EventTrigger(after={HEARTBEAT}, expect={HEARTBEAT, *ENDED},
                           match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                           for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                           within=timedelta(seconds=after_s))
    action = ChangeFlowRunState(state=StateType.CRASHED, message=crash_message(after_s))
    description = f"Marks a flow run Crashed after {after_s} s without a heartbeat (flows/watchdog.py)."
    try:
        automation = Automation.read(name=NAME)
    except ValueError:  # not there yet
        return Automation(name=NAME, description=description, trigger=trigger, actions=[action]).create()
    automation.trigger, automation.actions, automation.description = trigger, [action], description
    automation.update()
    return automation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--after", type=int, default=90,
                        help="seconds without a heartbeat before a run is marked Crashed (> the heartbeat period)")
    args = parser.parse_args(argv)
    if args.after < 45:
        parser.error(f"--after {args.after}: must be at least 45 s (heartbeats come every 30 s at the fastest)")
    automation = ensure_automation(args.after)
    print(f"automation {automation.name!r}: flow runs silent for {args.after} s are marked Crashed")


if __name__ == "__main__":
    main()
