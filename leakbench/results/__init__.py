"""Results: the leaderboard files (schema, locked append, tables), figures (``show``, ``plot``)
and throughput (``bench``). Imports the contract and ``leakbench.engine``."""
