//! burrow-types
