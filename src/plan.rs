//! What a container gets (stub).
#![allow(dead_code)]
