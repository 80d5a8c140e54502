"""Offline half: data loading, synthetic data, training, export and evaluation."""
