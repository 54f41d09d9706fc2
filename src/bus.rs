//! Node-wide events published by actors and fanned out by the supervisor.
