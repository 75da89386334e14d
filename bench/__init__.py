"""codecbench's benchmark suite (issue 7): ``python -m bench`` / ``make bench``.

One module per figure (``overhead``, ``real_work``, ``throughput``, ``transfer``, ``scale``,
``warm_start``), shared machinery in ``harness`` and ``profiling``, the writers in ``report``.
Results go to ``bench/results.json`` and ``bench/RESULTS.md``.
"""
