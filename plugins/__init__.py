"""podmutate's built-in plugins, one concern per module."""
