"""The controller's contract and decision rules (no I/O): observation and settings types,
the controller config, guards, rule policies, the learned policy's runtime, the policy
factory and the one control step (:mod:`.loop`). Sub-rooms: :mod:`.sim` (the simulator)
and :mod:`.learn` (training)."""
