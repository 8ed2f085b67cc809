//! Applying a plan inside a live container (stub).
#![allow(dead_code)]

pub mod cgroup;
