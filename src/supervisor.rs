//! Starts, watches and restarts actors; routes typed messages; applies config deltas.
