"""One module per ``co2scan`` sub-command; each exposes ``register(subparsers)``."""
