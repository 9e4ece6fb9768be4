//! Checks that tracing is invisible to the traced code.
//!
//! Each probe in tests/fixtures/invisible.c accesses a two-page buffer and records what it
//! observes in an output array that is never traced. The probes cover registers, flags, the
//! red zone, errno, signal masks and dispositions, system calls, vector and x87 state, signal
//! frames, and the fs and gs bases. Every
//! case runs its probe twice in this process: once untraced and once under `trace_call` with
//! the buffer's pages, each time on a new buffer with the same contents. It then requires the
//! same output slots and the same final buffer contents from both runs, and exactly the
//! expected accesses from the traced run, which shows that the accesses went through the
//! tracer.
//!
//! `ffitrace::init` forks, which is only sound in a single-threaded process, so this file has
//! its own `main` (`harness = false`). An optional first argument runs only the cases whose
//! name contains it.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    probes::main();
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("0 passed, 0 failed");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod probes {
    use std::ffi::{c_char, c_void, CStr, CString};
    use std::path::PathBuf;

    use ffitrace::{AccessKind, PageRange, TraceOutcome};

    const R: AccessKind = AccessKind::Read;
    const W: AccessKind = AccessKind::Write;

    /// Every probe has the C signature `void probe(uint64_t *buffer, uint64_t *out)`.
    type Probe = extern "C" fn(*mut u64, *mut u64);

    /// Which output slots must be equal in the two runs.
    #[derive(Clone, Copy)]
    enum Compare {
        /// Every slot but these.
        AllExcept(&'static [&'static str]),
        /// Only these slots. The accesses and the buffer contents are left to the case that
        /// compares the other slots of the same probe.
        Only(&'static [&'static str]),
    }

    impl Compare {
        fn includes(self, field: &str) -> bool {
            match self {
                Compare::AllExcept(excluded) => !excluded.contains(&field),
                Compare::Only(included) => included.contains(&field),
            }
        }
    }

    struct Case {
        name: &'static str,
        probe: &'static str,
        /// The traced run's accesses as (kind, offset into the buffer, size), in order.
        accesses: &'static [(AccessKind, u64, u32)],
        compare: Compare,
        /// Slots whose untraced value is known, which shows the probe measures what it claims.
        untraced_values: &'static [(&'static str, u64)],
        needs_avx2: bool,
        /// Why tracing is known to be visible in this case. Such a case must still differ:
        /// if it stops differing, the test fails so the entry is removed.
        known_difference: Option<&'static str>,
    }

    /// The fields that the kernel fills from the thread's last hardware exception when it
    /// builds a signal frame: the error code, the exception number and the page-fault address.
    const SIGNAL_FRAME_FAULT_FIELDS: &[&str] = &["handler.gregs.err", "handler.gregs.trapno", "handler.gregs.cr2"];

    /// `si_code` of an integer division by zero, from `<signal.h>`.
    const FPE_INTDIV: u64 = 1;
    /// The handler value of an ignored signal, from `<signal.h>`.
    const SIG_IGN: u64 = 1;

    const SIGNAL_HANDLER_ACCESSES: &[(AccessKind, u64, u32)] =
        &[(W, 0x10, 8), (R, 0x20, 8), (W, 0x28, 8), (R, 0x30, 8)];
    const DIVIDE_ACCESSES: &[(AccessKind, u64, u32)] = &[(W, 0x48, 8), (R, 0x48, 8)];
    const SIGNAL_MASK_ACCESSES: &[(AccessKind, u64, u32)] = &[(W, 0x0, 8), (R, 0x8, 8)];

    const CASES: &[Case] = &[
        Case {
            name: "registers_and_flags_set",
            probe: "probe_registers_flags_set",
            accesses: &[(W, 0x10, 8), (R, 0x18, 8), (W, 0x40, 8)],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("rflags", 0x24_0e97), ("rdi", 0x38), ("rsp_change", 0), ("r15", 0x0f1f_2f3f_4f5f_6f7f)],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "registers_and_flags_clear",
            probe: "probe_registers_flags_clear",
            accesses: &[(W, 0x10, 8), (R, 0x18, 8), (W, 0x40, 8)],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("rflags", 0x242), ("rdi", 0x48), ("rsp_change", 0)],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "red_zone",
            probe: "probe_red_zone",
            accesses: &[(W, 0x80, 8), (R, 0x88, 8), (R, 0x90, 8), (W, 0x90, 8), (W, 0xffc, 8)],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[
                ("red_zone[rsp-8]", 0x7e7e_7e7e_0000_0001),
                ("red_zone[rsp-128]", 0x7e7e_7e7e_0000_0010),
            ],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "errno",
            probe: "probe_errno",
            accesses: &[(W, 0x10, 8), (R, 0x18, 8), (W, 0x20, 8)],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[
                ("errno_after_write", 4242),
                ("errno_after_read", 77),
                ("errno_after_failed_close_and_write", libc::EBADF as u64),
            ],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "signal_mask",
            probe: "probe_signal_mask",
            accesses: SIGNAL_MASK_ACCESSES,
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("pending_after_write", 1 << (libc::SIGUSR2 - 1))],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "all_signals_blocked",
            probe: "probe_all_signals_blocked",
            accesses: SIGNAL_MASK_ACCESSES,
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("pending_after_write", 1 << (libc::SIGUSR2 - 1))],
            needs_avx2: false,
            known_difference: Some(
                "the kernel unblocks SIGSEGV and SIGTRAP and resets their handlers when it raises them for a fault or a single-step while they are blocked; the child undoes this when the call ends, but native code sees it during the call",
            ),
        },
        Case {
            name: "ignored_fault_signals",
            probe: "probe_ignored_fault_signals",
            accesses: SIGNAL_MASK_ACCESSES,
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("sigsegv_handler_after_write", SIG_IGN), ("sigtrap_handler_after_read", SIG_IGN)],
            needs_avx2: false,
            known_difference: Some(
                "the kernel resets an ignored SIGSEGV or SIGTRAP to SIG_DFL when it raises it for a fault or a single-step; the child undoes this when the call ends, but native code sees it during the call",
            ),
        },
        Case {
            name: "system_calls_on_traced_buffer",
            probe: "probe_system_calls",
            // The kernel's accesses raise no fault, so only the user-mode write is traced.
            accesses: &[(W, 0x200, 8)],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[
                ("read_into_buffer_result", 8),
                ("write_from_buffer_result", 8),
                ("bytes_left_in_pipe", 8),
            ],
            needs_avx2: false,
            known_difference: Some(
                "a system call that reads or writes a traced page fails with EFAULT, because the kernel's own accesses respect the page protection and raise no fault the tracer could handle",
            ),
        },
        Case {
            name: "vector_registers",
            probe: "probe_vector_registers",
            accesses: &[
                (W, 0x100, 32),
                (R, 0x140, 32),
                (W, 0x180, 8),
                (W, 0x18c, 4),
                (W, 0x1c0, 8),
                (R, 0x200, 4),
                (R, 0x204, 4),
                (R, 0x208, 4),
                (R, 0x20c, 4),
                (R, 0x220, 4),
                (R, 0x228, 4),
                (R, 0x22c, 4),
            ],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("mxcsr", 0xffe0), ("x87_control_word", 0x0a7f), ("ymm10.q0", 0)],
            needs_avx2: true,
            known_difference: None,
        },
        Case {
            name: "signal_handler_between_accesses",
            probe: "probe_signal_handler",
            accesses: SIGNAL_HANDLER_ACCESSES,
            compare: Compare::AllExcept(SIGNAL_FRAME_FAULT_FIELDS),
            untraced_values: &[
                ("handler.signo", libc::SIGUSR2 as u64),
                ("handler.errno", 3131),
                ("handler.gregs.rip", 0),
                ("handler.gregs.rsp", 0),
                ("handler.gregs.rbx", 0xb1b2_b3b4_b5b6_b7b8),
                ("after.rflags", 0xe97),
                ("red_zone[rsp-128]", 0x7e7e_7e7e_0000_0010),
            ],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "signal_handler_frame_fault_fields",
            probe: "probe_signal_handler",
            accesses: SIGNAL_HANDLER_ACCESSES,
            compare: Compare::Only(SIGNAL_FRAME_FAULT_FIELDS),
            untraced_values: &[],
            needs_avx2: false,
            known_difference: Some(
                "the kernel fills err, trapno and cr2 in a signal frame from the thread's last hardware exception, which tracing adds and ptrace cannot set",
            ),
        },
        Case {
            name: "fault_of_traced_instruction",
            probe: "probe_divide_fault",
            accesses: DIVIDE_ACCESSES,
            compare: Compare::AllExcept(SIGNAL_FRAME_FAULT_FIELDS),
            untraced_values: &[
                ("handler.signo", libc::SIGFPE as u64),
                ("handler.si_code", FPE_INTDIV),
                ("handler.si_addr", 0),
                ("handler.gregs.rip", 0),
                ("handler.gregs.rax", 1000),
                ("after.rax", 1000),
            ],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "fault_of_traced_instruction_frame_fault_fields",
            probe: "probe_divide_fault",
            accesses: DIVIDE_ACCESSES,
            compare: Compare::Only(SIGNAL_FRAME_FAULT_FIELDS),
            untraced_values: &[],
            needs_avx2: false,
            // NOTE: on Linux 6.18.44 under KVM the frame's trapno is 1 (debug) when the divide
            // error happens during a single-step, with mprotect (this machine has no
            // protection keys). An earlier kernel gave 0, as untraced runs do. Which kernel
            // path sets it is not known.
            known_difference: Some(
                "a divide error raised while the tracer single-steps the instruction can leave trapno 1 (debug) in the signal frame, and ptrace cannot set the trap number",
            ),
        },
        Case {
            name: "stack_in_traced_buffer",
            probe: "probe_traced_stack",
            accesses: &[
                (W, 0xf8, 8),
                (R, 0xf8, 8),
                (W, 0xf8, 8),
                (R, 0xf8, 8),
                (W, 0xf8, 8),
                (R, 0xf8, 8),
                (R, 0xf8, 8),
            ],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[("flags_pushed_to_buffer", 0xec7), ("flags_after", 0xec7), ("return_address_offset", 0)],
            needs_avx2: false,
            known_difference: None,
        },
        Case {
            name: "fs_and_gs_bases",
            probe: "probe_segment_bases",
            accesses: &[(W, 0x30, 8), (R, 0x38, 8)],
            compare: Compare::AllExcept(&[]),
            untraced_values: &[
                ("gs_base_after_write", 0),
                ("gs_word_after_write", 0x6a6b_6c6d_6e6f_7071),
                ("fs_word_after_write", 0),
            ],
            needs_avx2: false,
            known_difference: None,
        },
    ];

    pub fn main() {
        // Compile before forking, so the supervisor never runs gcc.
        let library = match Library::build() {
            Ok(library) => library,
            Err(error) => {
                println!("fixture build failed: {error}");
                println!("0 passed, 1 failed");
                std::process::exit(1);
            }
        };
        // SAFETY: first call in this process's main thread; the harness is off, so no other thread.
        if let Err(error) = unsafe { ffitrace::init(ffitrace::Options::default()) } {
            println!("ffitrace::init failed: {error}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }

        let filter = std::env::args().nth(1).filter(|arg| !arg.starts_with('-'));
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for case in CASES {
            if filter.as_deref().is_some_and(|filter| !case.name.contains(filter)) {
                continue;
            }
            if case.needs_avx2 && !std::arch::is_x86_feature_detected!("avx2") {
                println!("test {} ... skipped: this CPU has no AVX2", case.name);
                skipped += 1;
                continue;
            }
            match (run_case(&library, case), case.known_difference) {
                (Ok(()), None) => {
                    println!("test {} ... ok", case.name);
                    passed += 1;
                }
                (Err(message), Some(reason)) => {
                    println!("test {} ... ok (known difference: {reason})\n    {}", case.name, message.replace('\n', "\n    "));
                    passed += 1;
                }
                (Ok(()), Some(_)) => {
                    println!("test {} ... FAILED\n    no longer differs: remove its known difference", case.name);
                    failed += 1;
                }
                (Err(message), None) => {
                    println!("test {} ... FAILED\n    {}", case.name, message.replace('\n', "\n    "));
                    failed += 1;
                }
            }
        }
        if skipped == 0 {
            println!("{passed} passed, {failed} failed");
        } else {
            println!("{passed} passed, {failed} failed, {skipped} skipped");
        }
        std::process::exit(if failed == 0 { 0 } else { 1 });
    }

    fn run_case(library: &Library, case: &Case) -> Result<(), String> {
        let probe = library.probe(case.probe)?;
        let fields = library.field_names(case.probe)?;
        for (field, _) in case.untraced_values {
            if !fields.iter().any(|name| name == field) {
                return Err(format!("{} has no field {field}", case.probe));
            }
        }

        let untraced_buffer = Buffer::new();
        let mut untraced = vec![0u64; fields.len()];
        probe(untraced_buffer.words(), untraced.as_mut_ptr());

        let traced_buffer = Buffer::new();
        let mut traced = vec![0u64; fields.len()];
        let out = traced.as_mut_ptr();
        let ranges = [traced_buffer.range()];
        let result = ffitrace::trace_call(&ranges, || probe(traced_buffer.words(), out))
            .map_err(|error| format!("trace_call failed: {error}"))?;
        let trace = match result.outcome {
            TraceOutcome::Traced(trace) => trace,
            other => return Err(format!("the call was not traced: {other:?}")),
        };

        let mut problems = Vec::new();
        for (field, expected) in case.untraced_values {
            let index = fields.iter().position(|name| name == field).unwrap_or_default();
            if untraced[index] != *expected {
                problems.push(format!(
                    "the probe is broken: untraced {field} is {:#x}, expected {expected:#x}",
                    untraced[index]
                ));
            }
        }
        let whole = matches!(case.compare, Compare::AllExcept(_));
        if !trace.unsupported.is_empty() {
            problems.push(format!("unsupported instructions: {:?}", trace.unsupported));
        }
        let base = traced_buffer.base as u64;
        let accesses: Vec<(AccessKind, u64, u32)> =
            trace.accesses.iter().map(|access| (access.kind, access.addr.wrapping_sub(base), access.size)).collect();
        if whole && accesses != case.accesses {
            problems.push(format!(
                "accesses: expected {}, traced {}",
                format_accesses(case.accesses),
                format_accesses(&accesses)
            ));
        }
        for (index, field) in fields.iter().enumerate() {
            if case.compare.includes(field) && untraced[index] != traced[index] {
                problems.push(format!("{field}: untraced {:#x}, traced {:#x}", untraced[index], traced[index]));
            }
        }
        let first_difference = untraced_buffer.bytes().iter().zip(traced_buffer.bytes()).position(|(a, b)| a != b);
        if let Some(offset) = first_difference.filter(|_| whole) {
            problems.push(format!(
                "buffer contents differ from offset {offset:#x}: untraced {:02x?}, traced {:02x?}",
                &untraced_buffer.bytes()[offset..(offset + 8).min(Buffer::LEN)],
                &traced_buffer.bytes()[offset..(offset + 8).min(Buffer::LEN)]
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    fn format_accesses(accesses: &[(AccessKind, u64, u32)]) -> String {
        let items: Vec<String> =
            accesses.iter().map(|(kind, offset, size)| format!("{kind:?} {offset:#x}+{size}")).collect();
        format!("[{}]", items.join(", "))
    }

    /// The compiled tests/fixtures/invisible.c, loaded with `dlopen`.
    struct Library {
        handle: *mut c_void,
    }

    impl Library {
        fn build() -> Result<Library, String> {
            let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/invisible.c");
            let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("invisible.so");
            let status = std::process::Command::new("gcc")
                .args(["-O2", "-shared", "-fPIC", "-o"])
                .arg(&output)
                .arg(source)
                .status()
                .map_err(|error| format!("running gcc failed: {error}"))?;
            if !status.success() {
                return Err(format!("gcc failed on {source}: {status}"));
            }
            let path = CString::new(output.as_os_str().as_encoded_bytes()).map_err(|error| error.to_string())?;
            // SAFETY: `path` is a NUL-terminated string; the library has no constructors.
            let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
            if handle.is_null() {
                return Err(format!("dlopen of {} failed", output.display()));
            }
            Ok(Library { handle })
        }

        fn symbol(&self, name: &str) -> Result<*mut c_void, String> {
            let symbol = CString::new(name).map_err(|error| error.to_string())?;
            // SAFETY: `handle` came from dlopen and `symbol` is NUL-terminated.
            let address = unsafe { libc::dlsym(self.handle, symbol.as_ptr()) };
            if address.is_null() {
                return Err(format!("symbol {name} not found in the fixture"));
            }
            Ok(address)
        }

        fn probe(&self, name: &str) -> Result<Probe, String> {
            let address = self.symbol(name)?;
            // SAFETY: every probe has the C signature `void probe(uint64_t *, uint64_t *)`.
            Ok(unsafe { std::mem::transmute::<*mut c_void, Probe>(address) })
        }

        /// Reads the probe's `NAME_fields` array of C strings, which ends with a null pointer.
        fn field_names(&self, name: &str) -> Result<Vec<String>, String> {
            let mut entry = self.symbol(&format!("{name}_fields"))?.cast::<*const c_char>().cast_const();
            let mut names = Vec::new();
            // SAFETY: the fixture defines the array as `const char *const[]` ending with NULL,
            // and every other entry points to a string literal.
            unsafe {
                while !(*entry).is_null() {
                    names.push(CStr::from_ptr(*entry).to_string_lossy().into_owned());
                    entry = entry.add(1);
                }
            }
            Ok(names)
        }
    }

    /// Two pages of private anonymous memory with a fixed byte pattern, unmapped on drop.
    struct Buffer {
        base: *mut u8,
    }

    impl Buffer {
        /// The probes assume 4096-byte pages, the only size Linux uses on x86-64.
        const LEN: usize = 2 * 4096;

        fn new() -> Buffer {
            assert_eq!(ffitrace::page_size(), 4096, "the probes assume 4096-byte pages");
            // SAFETY: an anonymous mapping with no address hint touches no existing memory.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    Buffer::LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap of {} bytes failed", Buffer::LEN);
            let buffer = Buffer { base: base.cast() };
            // SAFETY: the mapping is live, writable and LEN bytes long.
            let bytes = unsafe { std::slice::from_raw_parts_mut(buffer.base, Buffer::LEN) };
            for (index, byte) in bytes.iter_mut().enumerate() {
                *byte = (index * 131 + 7) as u8;
            }
            buffer
        }

        fn words(&self) -> *mut u64 {
            self.base.cast()
        }

        fn range(&self) -> PageRange {
            PageRange { start: self.base as u64, len: Buffer::LEN as u64 }
        }

        fn bytes(&self) -> &[u8] {
            // SAFETY: the mapping is live, readable and LEN bytes long.
            unsafe { std::slice::from_raw_parts(self.base, Buffer::LEN) }
        }
    }

    impl Drop for Buffer {
        fn drop(&mut self) {
            // SAFETY: the mapping was created by `new` and nothing refers to it any more.
            unsafe { libc::munmap(self.base.cast(), Buffer::LEN) };
        }
    }
}
