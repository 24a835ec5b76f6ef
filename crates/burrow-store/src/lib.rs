//! burrow-store
