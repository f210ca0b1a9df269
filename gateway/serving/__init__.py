"""The front desk between the doors and the engine: one way in for every request.

:mod:`.desk` admits, starts, charges and finishes a request given plain values (a
:class:`~gateway.serving.desk.Call` and a :class:`~gateway.engine.planning.Plan`);
:mod:`.charging` is the one charging rule; :mod:`.finish` the one record (metrics, ledger,
access line); :mod:`.answers` drives a run's events into a door's bytes; :mod:`.web` is the
HTTP doors' thin wrapper (:func:`~gateway.serving.web.serve`).
"""
