//! Tegra CSV mount specs (stub, being written).
