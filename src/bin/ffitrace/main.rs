mod args;
mod cli;
fn main() {}
