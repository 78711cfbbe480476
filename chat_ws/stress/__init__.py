"""Load testing over real websockets: the original system's stress scenarios, and a soak.

``run(StressConfig(url=..., token=...))`` returns a :class:`~chat_ws.stress.report.StressReport`;
``manage.py chat_ws_stress`` is the command-line face. The package needs no Django settings: it
talks to a live server the way browsers do, and asks its health endpoint what is left afterwards.
"""

from chat_ws.stress.config import SCENARIOS, StressConfig
from chat_ws.stress.report import ScenarioReport, StressReport, render
from chat_ws.stress.runner import run

__all__ = ["SCENARIOS", "ScenarioReport", "StressConfig", "StressReport", "render", "run"]
