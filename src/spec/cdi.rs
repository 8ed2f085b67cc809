//! CDI specs (stub, being written).
