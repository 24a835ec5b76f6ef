//! burrow-envd
