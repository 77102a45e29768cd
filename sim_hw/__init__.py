"""Simulated co2scan device: speaks firmware_protocol.md over pty, TCP, USB or in-process."""
