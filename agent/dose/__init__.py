"""Dose monitoring at the edge: notification-level and deviation-index alerts per exposure, cumulative study
thresholds (NCRP 168 steps, per plane), patient-level cumulative thresholds, possible repeats, the daily room summary
and the monthly DRL audit, from a local SQLite history.

- rules.py: the rules file (notification levels, reference levels, DI bands, thresholds, repeats) and its defaults;
- bands.py: age (days, months, years) and weight bands;
- evaluate.py: pure evaluation (matching, bands, levels, steps, alert building, percentiles);
- state.py / patients.py / targets.py: what the monitor remembers of studies, patients and units' target EI;
- history.py: the SQLite history and alert ledger;
- summary.py / audit.py: the summary and the DRL audit figures (pure); audit_schedule.py: when the audit goes out;
- monitor.py: the DoseMonitor service and the intake's derive hook;
- lookup.py / cli.py / readable.py: `xray-agent lookup` and `drl-audit`, and dose messages as readable lines;
- config.py: the agent config's [dose] section.
"""

from agent.dose.config import DoseConfig
from agent.dose.rules import DoseRules, load_rules

__all__ = ["DoseConfig", "DoseRules", "load_rules"]
