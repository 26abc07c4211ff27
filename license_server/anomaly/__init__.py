"""Anomaly detection over the verification attempt stream (issue #15).

`engine.AnomalyEngine` is fed every committed batch of attempts (`AttemptLog.observe`), keeps
sliding windows in memory (`windows`), runs the detectors (`detectors`), and hands what they
find to a background task that raises the alerts (`runtime.alerts.raise_`), so that no
detector ever awaits on the verify path. `baseline` learns each product's usual check-in rate,
`churn` follows binds and releases through the change log, `sites` maps a host to its
registrable domain (Public Suffix List), `rebuild` refills the windows from the log at start-up.
"""
