//! Simulations over an in-memory lossy link (filled in below).
