//! dnc_cli
