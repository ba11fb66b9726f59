//! Admin HTTP listener.
