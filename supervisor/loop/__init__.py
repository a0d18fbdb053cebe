"""The supervision loop and its components: one thread decides, components report."""
