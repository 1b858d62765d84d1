//! Real-process cluster harness (being written).
