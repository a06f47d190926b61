"""Ensembles of classifiers (bootstrapped / uniform members; mean, max, vote aggregation)."""
