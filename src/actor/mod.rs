//! One actix actor per running thing. Each owns its sockets, its pure core and its counters.
