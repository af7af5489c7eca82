"""The differential harness: every hooked call, run once unpatched and once greened, compared.

* :mod:`.cases`  -- the generated matrix (pure data: which call, endpoint, fd state, flags...)
* :mod:`.probes` -- runs one case in the current process and describes what the C caller saw
* :mod:`.child`  -- the subprocess entry point (``python -m differential.child MODE [CASE-ID...]``)
* :mod:`.runner` -- starts the children (one per mode, batches of cases), survives hangs and
  crashes, and compares results

The test module is ``test_differential.py``; it holds the table of intentional differences.
"""
