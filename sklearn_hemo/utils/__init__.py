"""Shared helpers of the package: input validation, estimator discovery and checks, and a
compatibility layer for the private scikit-learn code the package relies on.

Nothing here is specific to one model or one data format; code that two or more
subpackages need lives here instead of being imported privately across modules.
"""
