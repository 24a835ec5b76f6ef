//! burrow-server
