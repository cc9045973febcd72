"""The engine: from a config to a trained, scored classifier (session, augmentation, backbone,
recipes, the leak-mask rule, the trainer, evaluation). Imports the contract and ``leakbench.data``."""
