mod glibc;
mod interpreter;
mod lifecycle;
mod support;

use support::TestResult;

type TestFn = fn(&support::Fixtures) -> TestResult;

const TESTS: &[(&str, TestFn)] = &[
    ("glibc_memset_writes_exact_range", glibc::memset_writes_exact_range),
    ("glibc_memcpy_reads_source_writes_destination", glibc::memcpy_reads_source_writes_destination),
    ("glibc_memcpy_straddles_pages", glibc::memcpy_straddles_pages),
    ("glibc_memmove_overlapping", glibc::memmove_overlapping),
    ("glibc_strlen_reads_string", glibc::strlen_reads_string),
    ("glibc_partly_traced_blocks", glibc::partly_traced_blocks),
    ("increment_int_read_then_write", interpreter::increment_int_read_then_write),
    ("write_two_of_three_bytes", interpreter::write_two_of_three_bytes),
    ("swap_pointer_pair", interpreter::swap_pointer_pair),
    ("untouched_pages_record_nothing", interpreter::untouched_pages_record_nothing),
    ("calls_in_sequence_are_separate", interpreter::calls_in_sequence_are_separate),
    ("unaligned_pages_rejected", lifecycle::unaligned_pages_rejected),
    ("overlapping_pages_rejected", lifecycle::overlapping_pages_rejected),
    ("unmapped_pages_rejected", lifecycle::unmapped_pages_rejected),
    ("unmapped_pages_keep_protection", lifecycle::unmapped_pages_keep_protection),
    ("nested_call_rejected", lifecycle::nested_call_rejected),
    ("status_calls_inside_call_return", lifecycle::status_calls_inside_call_return),
    ("forked_process_runs_untraced", lifecycle::forked_process_runs_untraced),
    ("background_system_calls_survive", lifecycle::background_system_calls_survive),
    ("panic_in_call_ends_it", lifecycle::panic_in_call_ends_it),
    ("unmapped_during_call_keeps_trace", lifecycle::unmapped_during_call_keeps_trace),
    ("exit_code_forwarded", lifecycle::exit_code_forwarded),
    ("set_exit_code_overrides_zero", lifecycle::set_exit_code_overrides_zero),
    ("crash_in_call_reported", lifecycle::crash_in_call_reported),
    ("exit_during_call", lifecycle::exit_during_call),
    ("ptrace_denied_runs_untraced", lifecycle::ptrace_denied_runs_untraced),
];

/// Options for the test process: `FFITRACE_PROTECTION` selects the page protection, so the
/// same tests run under each method.
pub fn options_from_environment() -> ffitrace::Options {
    let page_protection = std::env::var("FFITRACE_PROTECTION")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_default();
    let emulate_simple_accesses = std::env::var("FFITRACE_EMULATE").map_or(true, |value| value != "0");
    let stopless_calls = std::env::var("FFITRACE_STOPLESS").map_or(true, |value| value != "0");
    ffitrace::Options { page_protection, emulate_simple_accesses, stopless_calls, ..ffitrace::Options::default() }
}

pub fn main() {
    if let Ok(mode) = std::env::var(lifecycle::MODE_VARIABLE) {
        lifecycle::run_mode(&mode);
    }

    // Compile before forking, so the supervisor never runs gcc.
    let fixtures = match support::Fixtures::build() {
        Ok(fixtures) => fixtures,
        Err(error) => {
            println!("fixture build failed: {error}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    // SAFETY: first call in this process's main thread; the harness is off, so no other thread.
    if let Err(error) = unsafe { ffitrace::init(options_from_environment()) } {
        println!("ffitrace::init failed: {error}");
        println!("0 passed, 1 failed");
        std::process::exit(1);
    }

    let filter = std::env::args().nth(1).filter(|arg| !arg.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in TESTS {
        if filter.as_deref().is_some_and(|filter| !name.contains(filter)) {
            continue;
        }
        match test(&fixtures) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(message) => {
                println!("test {name} ... FAILED\n    {message}");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
