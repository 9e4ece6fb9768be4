//! Real-process tests of the embedding API: glibc and compiled C fixtures traced for real.
//!
//! `ffitrace::init` forks, which is only sound in a single-threaded process, so this file has
//! its own `main` (`harness = false`). Tests that end the traced program run this binary again
//! in a sub-mode selected by `FFITRACE_EMBED_MODE` and check its exit status.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "embed/mod.rs"]
mod embed;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    embed::main();
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("0 passed, 0 failed");
}
