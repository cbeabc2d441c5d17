"""The parallel test runner behind ``pytest --interloop-workers N``.

``controller`` runs in the main interpreter: pytest collects there as usual, then
``Controller.pytest_runtestloop`` starts an ``interloop.Pool`` (one job per worker,
``concurrency=1``), puts the selected tests' ids into a ``Channel`` and replays the
reports that come back through pytest's own hooks, so the terminal, ``-x``, ``--lf``,
``--junitxml``, ``--durations`` and the exit code work as in a serial run.

``worker`` runs in each own-GIL sub-interpreter: one long job builds a pytest
``Config`` from the same command line (with fd capture turned into sys capture),
collects a test's module the first time it sees one, runs pytest's run-test protocol
on the ids it pulls and sends serialized reports back.

Messages, worker to controller, over one ``Channel`` (tuples, first two items the
kind and the worker's number):

    ("ready", w)                     session started
    ("start", w, nodeid, location)   a test starts (for timeouts and crashes)
    ("done", w, nodeid, location, reports)   it finished: its serialized TestReports
    ("late", w, nodeid, location, reports)   a teardown failed after it was sent
    ("timer", w, nodeid, seconds)    pytest-timeout armed its timer (the controller keeps it)
    ("untimer", w, nodeid)           ... and cancelled it
    ("fallback", w, nodeid, module, why)   the module does not import here (module
                                     None: the test failed on a sub-interpreter limit)
    ("warning", w, data)             pytest_warning_recorded
    ("bye", w, exitstatus)           the worker's session is over
    ("fatal", w, text)               the worker could not start a session

Controller to workers, over the work ``Channel``: tuples of node ids (units; one
that starts with ``worker.LONG`` is a long test, not held back by a runner); the
controller closes it once every unit is queued, so a worker that finds it closed
and drained is done.
"""
