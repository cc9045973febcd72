"""Built-in sweep executors: where a sweep's cells run (``leakbench sweep --executor``)."""
