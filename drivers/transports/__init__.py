"""Transports: serial (pyserial, also socket://), USB bulk (pyusb) and the in-process simulator."""
