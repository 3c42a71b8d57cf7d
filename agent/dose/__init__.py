"""Dose monitoring at the edge: reference-level and deviation-index alerts per exposure, cumulative study thresholds,
repeats, and the daily room summary, from a local SQLite history.

- rules.py: the rules file (DRLs, DI bands, cumulative thresholds, repeat window) and its defaults;
- evaluate.py: pure evaluation (matching, levels, bands, thresholds, alert building, percentiles);
- history.py: the SQLite history and alert ledger;
- summary.py: summary periods and figures (pure);
- monitor.py: the DoseMonitor service and the intake's derive hook;
- config.py: the agent config's [dose] section.
"""

from agent.dose.config import DoseConfig
from agent.dose.rules import DoseRules, load_rules

__all__ = ["DoseConfig", "DoseRules", "load_rules"]
