//! The `atrest` command line.

fn main() {}
