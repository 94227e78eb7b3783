"""The ``lorif`` command: every command of the indexer, the service and the demo in one typer
app (``main.py``), their options generated from the settings classes by one flag generator
(``flags.py``). It imports ``indexer`` and ``service``; neither imports it."""
