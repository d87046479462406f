//! Where listen events come from: the built-in generator and files/stdin.

pub mod generator;
pub mod lines;
pub mod spike;
