"""The search report. Training and search plots are drawn by ``speechnas.train.plots`` and
``speechnas.search.plots``, next to the code that makes their data."""
