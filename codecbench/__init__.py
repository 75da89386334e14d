"""codecbench: the protocol package (``codecbench.v1``) and code shared by the services.

The generated protocol modules live in :mod:`codecbench.v1`; they are produced from
``protos/codecbench/v1/*.proto`` by ``make proto`` and committed.
"""
