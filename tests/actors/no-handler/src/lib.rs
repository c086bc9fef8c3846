//! A component that exports no `handler`: deploying it must be rejected with
//! a message naming the missing export.

/// Present only so the crate is not empty; it is not exported.
pub fn unused() -> u32 {
    42
}
