"""Typed config schemas and their registration with Hydra's ConfigStore."""
