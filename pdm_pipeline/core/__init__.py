"""Plain-Python core: data contract, labels, features, training, evaluation, export.

Nothing in this package imports Dagster, and heavy libraries (AutoGluon, Prophet, MLflow) are imported
inside the functions that need them, so importing the core is cheap.
"""
