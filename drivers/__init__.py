"""co2scan drivers: transports, the framed protocol codec and the device abstraction."""
