"""leakbench's built-in plugins.

They register through the ``leakbench`` entry-point group (see ``pyproject.toml``), one
entry point per module, exactly as an outside package would.
"""
