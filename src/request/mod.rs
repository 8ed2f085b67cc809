//! What a container asks for (temporary minimal Caps until the request work lands).
#![allow(dead_code)]

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(u8);
impl Caps {
    pub const COMPAT32: Caps = Caps(1);
    pub const COMPUTE: Caps = Caps(2);
    pub const DISPLAY: Caps = Caps(4);
    pub const GRAPHICS: Caps = Caps(8);
    pub const NGX: Caps = Caps(16);
    pub const UTILITY: Caps = Caps(32);
    pub const VIDEO: Caps = Caps(64);
    pub const ALL: Caps = Caps(127);
    pub fn contains(self, o: Caps) -> bool {
        self.0 & o.0 == o.0
    }
    pub fn union(self, o: Caps) -> Caps {
        Caps(self.0 | o.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}
