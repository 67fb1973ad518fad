"""The reproduction layer: what the book concludes about the paper, and by which rule.

Between the chapters (which draw) and the engine (which trains), this subpackage decides:

- :mod:`~sam_tutorial.reproduction.claims`: the registry of claims C1–C11 and of the paper's tables, the
  one status vocabulary, the rule from rows to a claim's status, and the claims index page;
- :mod:`~sam_tutorial.reproduction.toy_checks`: the toy-scale checks that recompute C1–C9;
- :mod:`~sam_tutorial.reproduction.scoreboard`: the status rule (built on :func:`sam_tutorial.stats.decide`)
  and the scoreboard; :mod:`~sam_tutorial.reproduction.result_rows` (the chapters' results),
  :mod:`~sam_tutorial.reproduction.control_rows` (the control experiments) and
  :mod:`~sam_tutorial.reproduction.table_rows` (the paper's tables) build its rows from recorded results;
- :mod:`~sam_tutorial.reproduction.sweeps`: summaries of a radius sweep;
- :mod:`~sam_tutorial.reproduction.paper_runs`: the paper's tables as rows, the settings the catalogue
  assumed, the cost of the full tables;
- :mod:`~sam_tutorial.reproduction.unconfirmed`: the register of reconstructed choices.

The paper's numbers are in :mod:`sam_tutorial.published`, the statistics in :mod:`sam_tutorial.stats`.
Imports point one way: ``chapters -> reproduction -> engine -> ...``; nothing here draws.
"""

__all__: list[str] = []
