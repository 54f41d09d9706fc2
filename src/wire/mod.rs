//! Packet formats: zero-copy views and owned `Repr`s. No I/O, no clock, no logging.
