"""Measurements of a trained run beyond its accuracy: other solvers (invariance), stability."""
