//! bpf(2) (stub).
