"""Example third-party plugins for podmutate."""
