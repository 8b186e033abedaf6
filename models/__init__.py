"""Models shipped with the runtime and the code that trains them."""
