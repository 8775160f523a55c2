//! contactctl (work in progress).
fn main() {}
