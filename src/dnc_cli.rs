//! DNC command line.
