"""The controller sidecar: observe the real server, run the one control step, apply, record.

:mod:`.runner` (the loop against the server), :mod:`.observer` and :mod:`.actuator` (the only
code here that talks HTTP), :mod:`.exporter` (its Prometheus metrics), :mod:`.decision_log`.
"""
