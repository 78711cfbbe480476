"""Load testing over real websockets: the original system's stress scenarios, a soak, and chaos.

``run(StressConfig(url=..., token=...))`` returns a :class:`~loadtest.report.StressReport`;
``python -m loadtest`` is the command-line face. The package needs no Django settings: it talks
to a live demo server the way browsers do, and asks the demo's leak report (``/demo/leaks``)
what is left afterwards. Only the forced sweep of the ``cleanup`` scenario runs a Django command,
in a child process with the server's settings. The chaos scenario (loadtest.chaos) is apart: it
starts its own Redis, database and servers, injects faults and checks a ledger (docs/chaos.md).
"""

from loadtest.config import SCENARIOS, StressConfig
from loadtest.report import ScenarioReport, StressReport, render
from loadtest.runner import run

__all__ = ["SCENARIOS", "ScenarioReport", "StressConfig", "StressReport", "render", "run"]
