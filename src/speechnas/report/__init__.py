"""The search report: one self-contained HTML file of a finished search (``build.write_report``,
``speechnas report RUN_DIR``). PNG figures are drawn by ``speechnas.train.plots`` and
``speechnas.search.plots``, next to the code that makes their data."""
