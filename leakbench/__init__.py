"""leakbench: a benchmark for leakage robustness of image classifiers.

Public API for plugin authors: ``hookimpl`` and the base classes in ``leakbench.types``.
"""

from leakbench.hookspecs import hookimpl
from leakbench.types import Dataset, ImageSet, Leakage, Masker, Method, Recipe, RunConfig, Stage

__version__ = "0.1.0"
__all__ = ["Dataset", "ImageSet", "Leakage", "Masker", "Method", "Recipe", "RunConfig", "Stage", "__version__",
           "hookimpl"]
