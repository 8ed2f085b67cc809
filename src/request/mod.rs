//! What a container asks for (stub: filled by the request work).
#![allow(dead_code)]
