"""Run orchestration: one run end to end (``pipeline.run_one``), its record and checkpoints,
resume, stop signals, and sweeps over executors. Imports the contract, engine and results."""
