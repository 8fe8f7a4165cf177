"""The compute-optimal frontier: how large a model, on how many tokens, for a budget here.

One layer above the report: ``options`` checks what a study asks for, ``design`` makes its
IsoFLOP design, ``run`` measures the throughput and trains the runs (``budget`` keeps a time
budget), ``fit`` and ``law`` are Chinchilla's approaches 2 and 3, ``machine`` the time-optimal
size, ``analysis`` all of it from a folder's records, ``report`` and ``figures`` its part of
the report, which ``section`` adds to every report (``report.sections``). Only the frontends
import it.
"""
