//! Device cgroup programming (stub).
