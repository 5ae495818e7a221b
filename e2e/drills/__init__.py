"""What fault tests and drills share: a venue of real processes, a crossing load of traders,
and the checks made afterwards from the outside (the events topic, the ledger's book).

Not product code: nothing under `workloads/` imports it.
"""
