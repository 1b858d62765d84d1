//! In-process cluster harness (being written).
