//! Requirement expressions (stub: filled by the requirement work).
#![allow(dead_code)]
