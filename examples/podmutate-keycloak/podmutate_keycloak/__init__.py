"""Keycloak clustering for podmutate: a plugin that makes Keycloak pods find each other."""

__version__ = "0.1.0"
