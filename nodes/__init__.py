"""The built-in diffusion nodes. ``register`` is the one place they are listed (entry point
``graph_runtime.nodes``)."""


def register(registry) -> None:
    """Add every built-in node to ``registry``."""
