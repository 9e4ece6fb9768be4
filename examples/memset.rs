//! Traces glibc's memset on one page and prints the accesses.

use ffitrace::{PageRange, TraceOutcome};

fn main() {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    // SAFETY: first thing in main, while the process has one thread.
    if let Err(error) = unsafe { ffitrace::init(ffitrace::Options::default()) } {
        eprintln!("tracing is off: {error}");
    }
    let page_size = ffitrace::page_size();
    // SAFETY: an anonymous private mapping with no address hint.
    let buffer = unsafe {
        libc::mmap(std::ptr::null_mut(), page_size, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    let pages = [PageRange { start: buffer as u64, len: page_size as u64 }];
    let traced = ffitrace::trace_call(&pages, || unsafe { libc::memset(buffer.add(3), 7, 20) });
    match traced {
        Ok(traced) => match traced.outcome {
            TraceOutcome::Traced(trace) => {
                for access in &trace.accesses {
                    println!("{:?} +{} {} bytes", access.kind, access.addr - buffer as u64, access.size);
                }
                println!("unsupported: {:?}", trace.unsupported);
            }
            other => println!("{other:?}"),
        },
        Err(error) => println!("error: {error}"),
    }
}
