//! Snapshot tests of the supervisor core's full transcripts: each event fed to
//! [`Supervisor::handle_event`] next to the actions it returned.
//!
//! The snapshots live in the crate's top-level `snapshots/` directory. To review a change,
//! run `INSTA_UPDATE=always cargo test --test core_snapshots` (or `cargo insta review`) and
//! read the diff. To keep the files short, registers list only their non-zero fields, the raw
//! `siginfo_t` is left out while it is all zeros, and addresses, lengths and register values
//! are written in hex.
//!
//! Most scenarios run twice: with `mprotect` through the child's `syscall` gadget (the plain
//! snapshot name) and with a memory protection key (the name ends in `_pkey`).
//!
//! The instruction bytes are real x86-64 encodings, as `objdump -D -b binary -m i386:x86-64`
//! disassembles them:
//! - `8b 07`: `mov eax, dword [rdi]`
//! - `89 07`: `mov dword [rdi], eax`
//! - `01 07`: `add dword [rdi], eax`
//! - `48 8b 07`: `mov rax, qword [rdi]`
//! - `a4`: `movs byte [rdi], byte [rsi]`
//! - `0f f7 c1`: `maskmovq mm0, mm1`
//! - `c4 e2 6d 90 04 8f`: `vpgatherdd ymm0, [rdi+ymm1*4], ymm2`

use std::collections::BTreeMap;

use ffitrace::core::{
    Action, BoardCall, Disposition, ExecEvent, SigInfo, SignalStop, Supervisor, SyscallPhase, TaskKind, PROTOCOL_COOKIE,
    PROTOCOL_SIGNAL, SYS_GETPPID,
};
use ffitrace::messages::{ChildMessage, Protection, StartRequest};
use ffitrace::regs::{Registers, VectorRegisters};
use ffitrace::PageRange;
use serde::Serialize;
use serde_json::{Map, Value};

/// The program's process id, which is also the id of its main thread.
const CHILD_PID: i32 = 4321;
/// A second thread of the program.
const THREAD: i32 = 4322;
/// A third thread of the program.
const THIRD_THREAD: i32 = 4323;
/// A process the program forks.
const FORKED: i32 = 4400;
const PAGE_SIZE: u64 = 0x1000;
/// The first traced page; [`PAGE_B`] follows it directly.
const PAGE_A: u64 = 0x7f00_0001_0000;
const PAGE_B: u64 = PAGE_A + PAGE_SIZE;
/// A traced page apart from [`PAGE_A`], with an untraced page between them.
const PAGE_C: u64 = PAGE_A + 3 * PAGE_SIZE;
/// Address of the child's `syscall` instruction that the core runs `mprotect` through.
const GADGET: u64 = 0x5555_5555_9000;
/// The protection key the child gives the traced pages.
const KEY: u32 = 3;
/// Address of the native instruction that touches the traced pages.
const CODE: u64 = 0x5555_5555_a000;
/// Where the child sits when it stops itself with the protocol signal.
const PROTOCOL_STOP_RIP: u64 = 0x7fff_f7e4_2000;
/// Where the child's end marker system call returns to.
const END_MARKER_RIP: u64 = 0x7fff_f7e4_3000;
/// Where a new task makes its first stop: just after the `clone` or `fork` system call.
const CLONE_RETURN_RIP: u64 = 0x7fff_f7e5_1000;
/// Where a running thread stops when the core interrupts it.
const INTERRUPTED_RIP: u64 = 0x5555_5555_b000;
/// Length of the `syscall` instruction: a step over the gadget moves `rip` this far.
const SYSCALL_LEN: u64 = 2;

const MPROTECT: Protection = Protection::Mprotect { syscall_gadget: GADGET, zeroed_stack: None };
const PKEY: Protection = Protection::ProtectionKey { key: KEY };

const SIGTRAP: i32 = 5;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGALRM: i32 = 14;
/// `si_code` of a SIGSEGV on a mapped page the access is not allowed on.
const SEGV_ACCERR: i32 = 2;
/// `si_code` of a SIGSEGV on an unmapped address.
const SEGV_MAPERR: i32 = 1;
/// `si_code` of a SIGSEGV on a page whose protection key the thread's PKRU denies.
const SEGV_PKUERR: i32 = 4;
/// `si_code` of the trap Linux reports after single-stepping over a `syscall` instruction.
const TRAP_BRKPT: i32 = 1;
/// `si_code` of the trap after single-stepping any other instruction.
const TRAP_TRACE: i32 = 2;
/// `si_code` of a signal the kernel sends for its own reasons, such as an expired `alarm`.
const SI_KERNEL: i32 = 0x80;
const ENOMEM: i64 = 12;
const ENOSYS: i64 = 38;

const MOV_EAX_FROM_RDI: &[u8] = &[0x8b, 0x07];
const MOV_EAX_TO_RDI: &[u8] = &[0x89, 0x07];
const ADD_EAX_TO_RDI: &[u8] = &[0x01, 0x07];
const MOV_RAX_FROM_RDI: &[u8] = &[0x48, 0x8b, 0x07];
const MOVSB: &[u8] = &[0xa4];
const REP_STOSB: &[u8] = &[0xf3, 0xaa];
const REP_MOVSB: &[u8] = &[0xf3, 0xa4];
/// Memory of the program with no traced page.
const UNTRACED: u64 = 0x5555_0000_0000;
const MOVUPS_XMM2_TO_RDI: &[u8] = &[0x0f, 0x11, 0x17];
const VMOVDQU_YMM1_FROM_RDI: &[u8] = &[0xc5, 0xfe, 0x6f, 0x0f];
/// A byte-masked store to [rdi] whose mask lives in an MMX register the decoder does not
/// read, so the store is only a possible write.
const MASKMOVQ: &[u8] = &[0x0f, 0xf7, 0xc1];
/// `vpgatherdd ymm0, [rdi+ymm1*4], ymm2`: its addresses depend on the vector registers.
const VPGATHERDD: &[u8] = &[0xc4, 0xe2, 0x6d, 0x90, 0x04, 0x8f];

/// One line of a transcript: an event and the actions the core returned for it.
struct Entry {
    event: ExecEvent,
    actions: Vec<Action>,
}

/// An [`Entry`] as the snapshot shows it, each part rewritten by [`compact`].
#[derive(Serialize)]
struct CompactEntry {
    event: Value,
    actions: Value,
}

/// Feeds events to a fresh core and records the transcript for a snapshot.
struct Script {
    core: Supervisor,
    protection: Protection,
    transcript: Vec<Entry>,
    /// Each task's registers as the core left them: those of its latest stop, or those of a
    /// later `SetRegisters`.
    registers: BTreeMap<i32, Registers>,
}

impl Script {
    fn new(protection: Protection) -> Script {
        Script { core: Supervisor::new(CHILD_PID), protection, transcript: Vec::new(), registers: BTreeMap::new() }
    }

    /// Feeds one event and records it with the actions it produced.
    fn feed(&mut self, event: ExecEvent) {
        match &event {
            ExecEvent::Signal(stop) => {
                self.registers.insert(stop.tid, stop.regs);
            }
            ExecEvent::OtherStop { tid, regs: Some(regs) } => {
                self.registers.insert(*tid, *regs);
            }
            _ => {}
        }
        let actions = self.core.handle_event(event.clone());
        for action in &actions {
            if let Action::SetRegisters { tid, regs } = action {
                self.registers.insert(*tid, *regs);
            }
        }
        self.transcript.push(Entry { event, actions });
    }

    /// Plays thread `tid` sending `message` and stopping with the protocol signal.
    fn send(&mut self, tid: i32, message: ChildMessage) {
        self.feed(protocol_stop(tid));
        self.feed(ExecEvent::Message(message));
    }

    /// Plays the main thread starting a traced call on `pages` in which every access is
    /// stepped.
    fn start(&mut self, pages: &[PageRange]) {
        self.start_with(pages, false);
    }

    /// Plays the main thread starting a traced call on `pages`; `emulate` lets the supervisor
    /// carry out simple accesses itself.
    fn start_with(&mut self, pages: &[PageRange], emulate: bool) {
        let request = StartRequest { pages: pages.to_vec(), page_size: PAGE_SIZE, protection: self.protection, emulate };
        self.send(CHILD_PID, ChildMessage::Start(request));
    }

    /// Plays the main thread ending the traced call as the child does: the entry stop of its
    /// end marker, `getppid(PROTOCOL_COOKIE, tid)`.
    fn end(&mut self) {
        let regs = Registers {
            rip: END_MARKER_RIP,
            orig_rax: SYS_GETPPID,
            rax: ENOSYS.wrapping_neg() as u64,
            rdi: PROTOCOL_COOKIE,
            rsi: CHILD_PID as u64,
            ..base_registers()
        };
        self.feed(ExecEvent::Syscall { tid: CHILD_PID, regs, phase: SyscallPhase::Entry, compat: false });
    }

    /// Plays the main thread creating thread `tid`: the creation event, then the new thread's
    /// first stop.
    fn spawn_thread(&mut self, tid: i32) {
        self.feed(ExecEvent::NewTask { parent: CHILD_PID, tid, kind: TaskKind::Thread });
        self.feed(first_stop(tid));
    }

    /// Plays thread `tid` stopping for the core's `Interrupt`.
    fn interrupted(&mut self, tid: i32) {
        let regs = Registers { rip: INTERRUPTED_RIP, ..base_registers() };
        self.feed(ExecEvent::OtherStop { tid, regs: Some(regs) });
    }

    /// Returns the registers the core last left `tid` with.
    fn registers_of(&self, tid: i32) -> Registers {
        *self.registers.get(&tid).expect("the task stopped earlier in the script")
    }

    /// Plays the step of `tid` over the `syscall` gadget ending with `mprotect` returning
    /// `result`.
    fn syscall_returns(&mut self, tid: i32, result: i64) {
        let mut regs = self.registers_of(tid);
        assert_eq!(regs.rip, GADGET, "task {tid} was not pointed at the gadget");
        regs.rip += SYSCALL_LEN;
        regs.rcx = regs.rip;
        regs.r11 = regs.eflags;
        regs.rax = result as u64;
        self.feed(trap(tid, TRAP_BRKPT, regs));
    }

    /// Plays the gadget step that opens or closes the pages of one access with `mprotect`. A
    /// protection key needs no step, because the core changes the thread's PKRU directly.
    fn gadget_step(&mut self, tid: i32) {
        if matches!(self.protection, Protection::Mprotect { .. }) {
            self.syscall_returns(tid, 0);
        }
    }

    /// Plays the step of `tid` over the faulting instruction of `len` bytes. `effect` applies
    /// its register changes.
    fn instruction_done(&mut self, tid: i32, len: u64, effect: impl FnOnce(&mut Registers)) {
        let mut regs = self.registers_of(tid);
        assert_eq!(regs.rip, CODE, "thread {tid} was not pointed back at the faulting instruction");
        regs.rip += len;
        effect(&mut regs);
        self.feed(trap(tid, TRAP_TRACE, regs));
    }

    /// Builds the fault of `tid` running the instruction `code` at [`CODE`], which accesses
    /// memory at `rdi`. The kernel reports `fault_addr` as the address that faulted, with the
    /// `si_code` that the script's protection produces.
    fn fault(&self, tid: i32, fault_addr: u64, rdi: u64, code: &[u8]) -> ExecEvent {
        let regs = Registers { rip: CODE, rdi, rax: 0x2a, ..base_registers() };
        stop(tid, SigInfo::new(SIGSEGV, self.denied_code(), fault_addr), regs, code.to_vec(), Disposition::Default)
    }

    /// Returns the `si_code` of a SIGSEGV on a traced page under the script's protection.
    fn denied_code(&self) -> i32 {
        match self.protection {
            Protection::Mprotect { .. } => SEGV_ACCERR,
            Protection::ProtectionKey { .. } => SEGV_PKUERR,
        }
    }

    /// Plays one whole traced access by `tid` that reads or writes `addr` with `code` and
    /// completes without a further fault.
    fn access(&mut self, tid: i32, addr: u64, code: &[u8], effect: impl FnOnce(&mut Registers)) {
        self.feed(self.fault(tid, addr, addr, code));
        self.gadget_step(tid);
        self.instruction_done(tid, code.len() as u64, effect);
        self.gadget_step(tid);
    }

    /// Compares the transcript with the snapshot `snapshots/<name>.snap`.
    fn assert_snapshot(self, name: &str, description: &str) {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_description(description);
        let transcript: Vec<CompactEntry> = self
            .transcript
            .iter()
            .map(|entry| CompactEntry {
                event: compact(serde_json::to_value(&entry.event).expect("an event serializes")),
                actions: compact(serde_json::to_value(&entry.actions).expect("actions serialize")),
            })
            .collect();
        settings.bind(|| insta::assert_yaml_snapshot!(name, transcript));
    }
}

/// Builds the protocol-signal stop that thread `tid` makes after sending a message. The
/// signal's `si_pid` is the process id, whichever thread queued it.
fn protocol_stop(tid: i32) -> ExecEvent {
    let info = SigInfo { pid: CHILD_PID, value: PROTOCOL_COOKIE, ..SigInfo::new(PROTOCOL_SIGNAL, -1, 0) };
    let regs = Registers { rip: PROTOCOL_STOP_RIP, ..base_registers() };
    stop(tid, info, regs, Vec::new(), Disposition::Caught)
}

/// Builds a SIGSEGV raised in the main thread by `mov eax,[rdi]` at [`CODE`] with `rdi` null.
fn null_read() -> ExecEvent {
    let regs = Registers { rip: CODE, rax: 0x2a, ..base_registers() };
    stop(CHILD_PID, SigInfo::new(SIGSEGV, SEGV_MAPERR, 0), regs, MOV_EAX_FROM_RDI.to_vec(), Disposition::Default)
}

/// Builds the trap that ends a single-step of `tid`, with its registers after it.
fn trap(tid: i32, code: i32, regs: Registers) -> ExecEvent {
    stop(tid, SigInfo::new(SIGTRAP, code, 0), regs, Vec::new(), Disposition::Default)
}

/// Builds the stop of `tid` for an expired `alarm`, taken with `regs` before the next
/// instruction ran.
fn alarm(tid: i32, regs: Registers) -> ExecEvent {
    stop(tid, SigInfo::new(SIGALRM, SI_KERNEL, 0), regs, Vec::new(), Disposition::Caught)
}

/// Builds the first stop of a new task, just after the system call that created it.
fn first_stop(tid: i32) -> ExecEvent {
    ExecEvent::OtherStop { tid, regs: Some(Registers { rip: CLONE_RETURN_RIP, ..base_registers() }) }
}

/// Returns vector registers for [`VPGATHERDD`]: ymm1 (the indices) is zero and every element
/// of ymm2 (the mask) has its top bit set, so all eight elements load the dword at rdi.
fn gather_vectors() -> VectorRegisters {
    let mask = [u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0, 0, 0, 0];
    VectorRegisters { zmm: vec![[0; 8], [0; 8], mask], k: [0; 8] }
}

fn stop(tid: i32, info: SigInfo, regs: Registers, code: Vec<u8>, disposition: Disposition) -> ExecEvent {
    ExecEvent::Signal(SignalStop { tid, info, regs, code, disposition })
}

/// Registers every stop shares: a stack, the flags a running program usually has, and
/// `orig_rax` set to -1 as it is outside a system call.
fn base_registers() -> Registers {
    Registers { rsp: 0x7fff_ffff_e000, eflags: 0x246, orig_rax: u64::MAX, ..Registers::default() }
}

fn pages(start: u64, count: u64) -> PageRange {
    PageRange { start, len: count * PAGE_SIZE }
}

/// Rewrites a serialized event or action list for reading: zero registers and an all-zero
/// raw siginfo are dropped, register values and addresses become hex strings, and
/// instruction bytes become one hex string.
fn compact(value: Value) -> Value {
    match value {
        Value::Object(map) if map.contains_key("orig_rax") && map.contains_key("rip") => {
            let registers = map.into_iter().filter(|(_, value)| value.as_u64() != Some(0));
            Value::Object(registers.map(|(name, value)| (name, hex(value))).collect())
        }
        Value::Object(map) => {
            let mut compacted = Map::new();
            for (key, value) in map {
                let all_zero = value.as_array().is_some_and(|items| items.iter().all(|item| item.as_u64() == Some(0)));
                if key == "raw" && all_zero {
                    continue;
                }
                let value = match key.as_str() {
                    "addr" | "start" | "len" | "value" | "syscall_gadget" => hex(value),
                    "code" | "bytes" if value.is_array() => hex_bytes(value),
                    _ => compact(value),
                };
                compacted.insert(key, value);
            }
            Value::Object(compacted)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(compact).collect()),
        other => other,
    }
}

/// Writes instruction bytes as `objdump` does, for example `"8b 07"`.
fn hex_bytes(value: Value) -> Value {
    let bytes: Vec<String> =
        value.as_array().into_iter().flatten().filter_map(Value::as_u64).map(|byte| format!("{byte:02x}")).collect();
    Value::String(bytes.join(" "))
}

fn hex(value: Value) -> Value {
    match value.as_u64() {
        Some(number) => Value::String(format!("{number:#x}")),
        None => value,
    }
}

// Accesses by one thread, under each protection.

fn read(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.access(CHILD_PID, PAGE_A + 0x10, MOV_EAX_FROM_RDI, |regs| regs.rax = 0x1234_5678);
    script.end();
    script
}

#[test]
fn read_access() {
    read(MPROTECT).assert_snapshot(
        "core_read",
        "mov eax,[rdi] on a traced page: open the page, step the load, close the page, resume \
         with the loaded value; End returns one 4-byte read",
    );
}

#[test]
fn read_access_pkey() {
    read(PKEY).assert_snapshot(
        "core_read_pkey",
        "mov eax,[rdi] on a page with a protection key: open the key in the thread's PKRU, step \
         the load, close the key and resume, with no register change; End returns one 4-byte read",
    );
}

fn write(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.access(CHILD_PID, PAGE_A + 0x20, MOV_EAX_TO_RDI, |_| {});
    script.end();
    script
}

#[test]
fn write_access() {
    write(MPROTECT).assert_snapshot(
        "core_write",
        "mov [rdi],eax on a traced page: the same open, step, close sequence; End returns one \
         4-byte write",
    );
}

#[test]
fn write_access_pkey() {
    write(PKEY).assert_snapshot(
        "core_write_pkey",
        "mov [rdi],eax on a page with a protection key: the key is opened read-write for the \
         step; End returns one 4-byte write",
    );
}

fn read_modify_write(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.access(CHILD_PID, PAGE_A + 0x30, ADD_EAX_TO_RDI, |regs| regs.eflags = 0x202);
    script.end();
    script
}

#[test]
fn read_modify_write_access() {
    read_modify_write(MPROTECT).assert_snapshot(
        "core_read_modify_write",
        "add [rdi],eax on a traced page: one step records a 4-byte read, then a 4-byte write \
         of the same bytes",
    );
}

#[test]
fn read_modify_write_access_pkey() {
    read_modify_write(PKEY).assert_snapshot(
        "core_read_modify_write_pkey",
        "add [rdi],eax on a page with a protection key: one step records a 4-byte read, then a \
         4-byte write of the same bytes",
    );
}

/// Plays `mov rax,[rdi]` with `rdi` 4 bytes before the end of page A, so it reads the last 4
/// bytes of A and the first 4 of B. The kernel reports the first address that faulted.
fn straddle(protection: Protection, traced: &[PageRange], fault_addr: u64) -> Script {
    let mut script = Script::new(protection);
    script.start(traced);
    script.feed(script.fault(CHILD_PID, fault_addr, PAGE_B - 4, MOV_RAX_FROM_RDI));
    script.gadget_step(CHILD_PID);
    script.instruction_done(CHILD_PID, 3, |regs| regs.rax = 0x1122_3344_5566_7788);
    script.gadget_step(CHILD_PID);
    script.end();
    script
}

#[test]
fn straddling_access_both_pages_traced() {
    straddle(MPROTECT, &[pages(PAGE_A, 2)], PAGE_B - 4).assert_snapshot(
        "core_straddle_both_traced",
        "mov rax,[rdi] with rdi 4 bytes before the end of a page, both pages traced: one \
         mprotect opens and one closes both pages, and the read is one 8-byte access",
    );
}

#[test]
fn straddling_access_both_pages_traced_pkey() {
    straddle(PKEY, &[pages(PAGE_A, 2)], PAGE_B - 4).assert_snapshot(
        "core_straddle_both_traced_pkey",
        "mov rax,[rdi] across two pages with a protection key: opening the key opens both \
         pages, and the read is one 8-byte access",
    );
}

#[test]
fn straddling_access_first_page_traced() {
    straddle(MPROTECT, &[pages(PAGE_A, 1)], PAGE_B - 4).assert_snapshot(
        "core_straddle_first_traced",
        "mov rax,[rdi] with rdi 4 bytes before the end of the only traced page: only that \
         page is opened and closed, and the read is one 8-byte access",
    );
}

#[test]
fn straddling_access_first_page_traced_pkey() {
    straddle(PKEY, &[pages(PAGE_A, 1)], PAGE_B - 4).assert_snapshot(
        "core_straddle_first_traced_pkey",
        "mov rax,[rdi] from the only page with a protection key into the next page: one step \
         with the key open, and the read is one 8-byte access",
    );
}

#[test]
fn straddling_access_second_page_traced() {
    // The kernel reports the first byte of the inaccessible page, not the access's start.
    straddle(MPROTECT, &[pages(PAGE_B, 1)], PAGE_B).assert_snapshot(
        "core_straddle_second_traced",
        "mov rax,[rdi] with rdi 4 bytes before an untraced page ends and the next page traced: \
         only the traced page is opened and closed, and the read is one 8-byte access at rdi",
    );
}

#[test]
fn straddling_access_second_page_traced_pkey() {
    straddle(PKEY, &[pages(PAGE_B, 1)], PAGE_B).assert_snapshot(
        "core_straddle_second_traced_pkey",
        "mov rax,[rdi] from an untraced page into a page with a protection key: the fault is \
         at the second page, and the read is one 8-byte access at rdi",
    );
}

fn segfault_outside_pages(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(null_read());
    script.feed(ExecEvent::Killed { signal: SIGSEGV, core_dumped: true });
    script
}

#[test]
fn segfault_outside_traced_pages() {
    segfault_outside_pages(MPROTECT).assert_snapshot(
        "core_segfault_outside_pages",
        "a null read inside a traced call with SIGSEGV at its default disposition: report the \
         crash with the call's pages, deliver the SIGSEGV, then finish with 128 + 11 when the \
         program dies",
    );
}

#[test]
fn segfault_outside_traced_pages_pkey() {
    segfault_outside_pages(PKEY).assert_snapshot(
        "core_segfault_outside_pages_pkey",
        "a null read inside a traced call that uses a protection key: the same crash report, \
         SIGSEGV delivery and finish with 128 + 11",
    );
}

fn killed_while_stepping(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x40, PAGE_A + 0x40, MOV_EAX_TO_RDI));
    script.gadget_step(CHILD_PID);
    script.feed(ExecEvent::Killed { signal: SIGKILL, core_dumped: false });
    script
}

#[test]
fn child_killed_while_stepping() {
    killed_while_stepping(MPROTECT).assert_snapshot(
        "core_killed_while_stepping",
        "SIGKILL while the faulting store is being stepped with its page open: report the \
         death during the call with the pages and an empty trace, then finish with 128 + 9",
    );
}

#[test]
fn child_killed_while_stepping_pkey() {
    killed_while_stepping(PKEY).assert_snapshot(
        "core_killed_while_stepping_pkey",
        "SIGKILL while the faulting store is being stepped with its protection key open: \
         report the death during the call with an empty trace, then finish with 128 + 9",
    );
}

fn signal_during_step(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x50, PAGE_A + 0x50, MOV_EAX_FROM_RDI));
    script.gadget_step(CHILD_PID);
    let at_instruction = script.registers_of(CHILD_PID);
    script.feed(alarm(CHILD_PID, at_instruction));
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 7);
    script.gadget_step(CHILD_PID);
    script
}

#[test]
fn signal_during_step_is_deferred() {
    signal_during_step(MPROTECT).assert_snapshot(
        "core_signal_during_step",
        "SIGALRM stops the child before the load is stepped: the core repeats the step without \
         the signal, closes the page, and delivers the SIGALRM with the final Continue",
    );
}

#[test]
fn signal_during_step_is_deferred_pkey() {
    signal_during_step(PKEY).assert_snapshot(
        "core_signal_during_step_pkey",
        "SIGALRM stops the thread before the load is stepped with its protection key open: the \
         core repeats the step without the signal, closes the key, and delivers the SIGALRM with \
         the final Continue",
    );
}

fn second_start(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.start(&[pages(PAGE_B, 1)]);
    script.access(CHILD_PID, PAGE_A + 0x60, MOV_EAX_TO_RDI, |_| {});
    script.end();
    script
}

#[test]
fn second_start_rejected() {
    second_start(MPROTECT).assert_snapshot(
        "core_second_start_rejected",
        "a second Start during a traced call is rejected and the first call goes on: its page \
         is still traced and End returns its write",
    );
}

#[test]
fn second_start_rejected_pkey() {
    second_start(PKEY).assert_snapshot(
        "core_second_start_rejected_pkey",
        "a second Start during a traced call with a protection key is rejected and the first \
         call goes on: its page is still traced and End returns its write",
    );
}

#[test]
fn end_without_start_rejected() {
    let mut script = Script::new(MPROTECT);
    script.send(CHILD_PID, ChildMessage::End);
    script.feed(ExecEvent::Exited { status: 0 });
    script.assert_snapshot(
        "core_end_without_start",
        "End outside a traced call is rejected and the child resumed; a normal exit then \
         finishes with status 0",
    );
}

#[test]
fn start_with_invalid_pages_rejected() {
    let mut script = Script::new(MPROTECT);
    script.start(&[PageRange { start: PAGE_A + 0x800, len: PAGE_SIZE }]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x800, PAGE_A + 0x800, MOV_EAX_FROM_RDI));
    script.assert_snapshot(
        "core_start_with_invalid_pages",
        "a Start with an unaligned range is rejected, so a later fault at that address is not \
         traced but reported as a crash",
    );
}

#[test]
fn start_with_invalid_key_rejected() {
    let mut script = Script::new(Protection::ProtectionKey { key: 16 });
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A, PAGE_A, MOV_EAX_FROM_RDI));
    script.assert_snapshot(
        "core_start_with_invalid_key",
        "a Start with protection key 16, which x86-64 does not have (keys are 0 to 15, and 0 is \
         the default key), is rejected, so a later fault on the page is reported as a crash",
    );
}

fn crash_while_stepping(protection: Protection) -> Script {
    crash_while_stepping_with(protection, Disposition::Default)
}

/// Builds the crash of `crash_while_stepping`, with `disposition` in the write fault's stop.
/// The driver leaves it `Unknown`, and the core then requests it.
fn crash_while_stepping_with(protection: Protection, disposition: Disposition) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    // movsb copies a byte from the traced page to a null pointer: the read faults first.
    let regs = Registers { rip: CODE, rsi: PAGE_A, rdi: 0, ..base_registers() };
    let read_fault = SigInfo::new(SIGSEGV, script.denied_code(), PAGE_A);
    script.feed(stop(CHILD_PID, read_fault, regs, MOVSB.to_vec(), Disposition::Default));
    script.gadget_step(CHILD_PID);
    // Stepped with the page open, the same instruction faults on its write.
    let write_fault = SigInfo::new(SIGSEGV, SEGV_MAPERR, 0);
    script.feed(stop(CHILD_PID, write_fault, regs, MOVSB.to_vec(), disposition));
    if disposition == Disposition::Unknown {
        script.feed(ExecEvent::Disposition { tid: CHILD_PID, disposition: Disposition::Default });
    }
    script.gadget_step(CHILD_PID);
    script.feed(ExecEvent::Killed { signal: SIGSEGV, core_dumped: true });
    script
}

#[test]
fn crash_while_stepping_reported() {
    crash_while_stepping(MPROTECT).assert_snapshot(
        "core_crash_while_stepping",
        "movsb from a traced page to a null pointer: the stepped instruction faults on its \
         write, so report the crash, close the page, restore the registers at the crash and \
         deliver the SIGSEGV; the death that follows adds no second report",
    );
}

#[test]
fn crash_while_stepping_reads_disposition() {
    crash_while_stepping_with(MPROTECT, Disposition::Unknown).assert_snapshot(
        "core_crash_while_stepping_disposition",
        "the crash of core_crash_while_stepping as the driver reports it, without the \
         disposition: the core reads it with the page still open, then reports the crash, \
         closes the page and delivers the SIGSEGV",
    );
}

#[test]
fn crash_while_stepping_reported_pkey() {
    crash_while_stepping(PKEY).assert_snapshot(
        "core_crash_while_stepping_pkey",
        "movsb from a page with a protection key to a null pointer: the stepped instruction \
         faults on its write, so report the crash, close the key and deliver the SIGSEGV; the \
         death that follows adds no second report",
    );
}

#[test]
fn mprotect_failure_kills() {
    let mut script = Script::new(MPROTECT);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A, PAGE_A, MOV_EAX_TO_RDI));
    script.syscall_returns(CHILD_PID, -ENOMEM);
    script.feed(ExecEvent::Killed { signal: SIGKILL, core_dumped: false });
    script.assert_snapshot(
        "core_mprotect_failure",
        "mprotect through the gadget returns -ENOMEM: report a protocol error with the trace so \
         far and kill the child, then finish with 128 + 9",
    );
}

fn other_stop_while_stepping(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x70, PAGE_A + 0x70, MOV_EAX_FROM_RDI));
    script.gadget_step(CHILD_PID);
    let at_instruction = script.registers_of(CHILD_PID);
    script.feed(ExecEvent::OtherStop { tid: CHILD_PID, regs: Some(at_instruction) });
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 9);
    script.gadget_step(CHILD_PID);
    script
}

#[test]
fn other_stop_while_stepping_repeats_step() {
    other_stop_while_stepping(MPROTECT).assert_snapshot(
        "core_other_stop_while_stepping",
        "a stop that is not a signal delivery while the load is stepped: the core repeats the \
         step instead of resuming the child with its page open",
    );
}

#[test]
fn other_stop_while_stepping_repeats_step_pkey() {
    other_stop_while_stepping(PKEY).assert_snapshot(
        "core_other_stop_while_stepping_pkey",
        "a stop that is not a signal delivery while the load is stepped with its protection key \
         open: the core repeats the step instead of resuming the thread with the key open",
    );
}

fn possible_write_not_taken(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.access(CHILD_PID, PAGE_A + 0x40, MASKMOVQ, |_| {});
    script.end();
    script
}

#[test]
fn possible_write_that_writes_nothing() {
    possible_write_not_taken(MPROTECT).assert_snapshot(
        "core_possible_write_not_taken",
        "maskmovq is stepped with its page opened read-only (mprotect 1); it completes without \
         a fault, so it wrote nothing and the trace holds no access for it",
    );
}

#[test]
fn possible_write_that_writes_nothing_pkey() {
    possible_write_not_taken(PKEY).assert_snapshot(
        "core_possible_write_not_taken_pkey",
        "maskmovq is stepped with its protection key opened read-only; it completes without a \
         fault, so it wrote nothing and the trace holds no access for it",
    );
}

fn possible_write_taken(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x40, PAGE_A + 0x40, MASKMOVQ));
    script.gadget_step(CHILD_PID);
    // Stepped with the page read-only, the store faults at its first written byte.
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x42, PAGE_A + 0x40, MASKMOVQ));
    script.gadget_step(CHILD_PID);
    script.instruction_done(CHILD_PID, 3, |_| {});
    script.gadget_step(CHILD_PID);
    script.end();
    script
}

#[test]
fn possible_write_that_writes() {
    possible_write_taken(MPROTECT).assert_snapshot(
        "core_possible_write_taken",
        "maskmovq faults while its page is open read-only, so it writes: the page is reopened \
         read-write (mprotect 3), the store is stepped again and recorded as a certain 8-byte \
         write",
    );
}

#[test]
fn possible_write_that_writes_pkey() {
    possible_write_taken(PKEY).assert_snapshot(
        "core_possible_write_taken_pkey",
        "maskmovq faults while its protection key is open read-only, so it writes: the key is \
         reopened read-write, the store is stepped again and recorded as a certain 8-byte write",
    );
}

// Several threads and processes.

/// Plays the main thread and [`THREAD`] faulting on traced pages one after the other, before
/// either access has finished.
fn concurrent_accesses(protection: Protection) -> Script {
    let mut script = Script::new(protection);
    script.spawn_thread(THREAD);
    script.start(&[pages(PAGE_A, 1), pages(PAGE_C, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_FROM_RDI));
    script.feed(script.fault(THREAD, PAGE_C + 0x20, PAGE_C + 0x20, MOV_EAX_TO_RDI));
    script
}

#[test]
fn concurrent_accesses_pkey() {
    let mut script = concurrent_accesses(PKEY);
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 0x1234_5678);
    script.instruction_done(THREAD, 2, |_| {});
    script.end();
    script.assert_snapshot(
        "core_concurrent_accesses_pkey",
        "with a protection key, the main thread faults on page A, then thread 4322 on page C \
         before the first load is stepped: each thread gets the key opened in its own PKRU and is \
         stepped at once, each action names only its own thread, and End returns the read and \
         the write in the order their steps finished",
    );
}

#[test]
fn concurrent_accesses_held() {
    // The main thread's fault interrupts thread 4322, which stops at its own fault instead.
    let mut script = concurrent_accesses(MPROTECT);
    // The main thread runs its access; thread 4322 stays stopped at its fault meanwhile.
    script.syscall_returns(CHILD_PID, 0);
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 0x1234_5678);
    script.syscall_returns(CHILD_PID, 0);
    // The main thread is interrupted again before thread 4322 runs its own access.
    script.interrupted(CHILD_PID);
    script.syscall_returns(THREAD, 0);
    script.instruction_done(THREAD, 2, |_| {});
    script.syscall_returns(THREAD, 0);
    script.end();
    script.assert_snapshot(
        "core_concurrent_accesses_held",
        "with mprotect, the main thread faults on page A and the core interrupts thread 4322, \
         which stops at its own fault on page C: it is held with no action while the main \
         thread's access runs; the Continue that ends that access comes with an Interrupt of the \
         main thread, and once it has stopped thread 4322's access runs, after which both \
         threads are resumed; End returns the read, then the write",
    );
}

#[test]
fn thread_announced_before_first_stop() {
    let mut script = Script::new(PKEY);
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: THREAD, kind: TaskKind::Thread });
    script.feed(first_stop(THREAD));
    script.start(&[pages(PAGE_A, 1)]);
    script.access(THREAD, PAGE_A + 0x8, MOV_EAX_FROM_RDI, |regs| regs.rax = 5);
    script.end();
    script.assert_snapshot(
        "core_thread_announced_first",
        "the main thread reports a new thread, which stops later: the parent is resumed at the \
         report and the thread at its first stop; the new thread's access is then traced",
    );
}

#[test]
fn thread_stops_before_announcement() {
    let mut script = Script::new(MPROTECT);
    script.feed(first_stop(THREAD));
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: THREAD, kind: TaskKind::Thread });
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(THREAD, PAGE_A + 0x8, PAGE_A + 0x8, MOV_EAX_FROM_RDI));
    script.interrupted(CHILD_PID);
    script.syscall_returns(THREAD, 0);
    script.instruction_done(THREAD, 2, |regs| regs.rax = 5);
    script.syscall_returns(THREAD, 0);
    script.end();
    script.assert_snapshot(
        "core_thread_stops_first",
        "a new thread stops before its parent reports it: the stop gets no action, then the \
         report resumes both the parent and the thread; the new thread's access is then traced \
         with mprotect, the main thread interrupted meanwhile",
    );
}

#[test]
fn fork_during_call_mprotect() {
    let mut script = Script::new(MPROTECT);
    script.start(&[pages(PAGE_A, 1), pages(PAGE_C, 1)]);
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: FORKED, kind: TaskKind::Fork });
    script.feed(first_stop(FORKED));
    script.syscall_returns(FORKED, 0);
    script.syscall_returns(FORKED, 0);
    script.end();
    script.assert_snapshot(
        "core_fork_during_call",
        "with mprotect, the program forks during a call on two separate runs of pages: the \
         parent is resumed, the forked process runs the gadget once per run to make its copy \
         read-write, gets its registers from its first stop back and is detached",
    );
}

#[test]
fn fork_during_call_pkey() {
    let mut script = Script::new(PKEY);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(first_stop(FORKED));
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: FORKED, kind: TaskKind::Fork });
    script.end();
    script.assert_snapshot(
        "core_fork_during_call_pkey",
        "with a protection key, a forked process stops before its parent reports it: the \
         report resumes the parent, opens the key read-write in the forked process and \
         detaches it",
    );
}

#[test]
fn vfork_during_call_mprotect() {
    let mut script = Script::new(MPROTECT);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: FORKED, kind: TaskKind::Vfork });
    script.feed(first_stop(FORKED));
    script.end();
    script.assert_snapshot(
        "core_vfork_during_call",
        "with mprotect, a vfork child shares the program's pages, so opening them would open \
         the program's: the parent is resumed and the vfork child is only detached",
    );
}

#[test]
fn fork_outside_call() {
    let mut script = Script::new(MPROTECT);
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: FORKED, kind: TaskKind::Fork });
    script.feed(first_stop(FORKED));
    script.assert_snapshot(
        "core_fork_outside_call",
        "a process forked outside any traced call has no protected pages: the parent is \
         resumed and the forked process detached at its first stop",
    );
}

#[test]
fn thread_exits_while_stepping_pkey() {
    let mut script = Script::new(PKEY);
    script.spawn_thread(THREAD);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(THREAD, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_TO_RDI));
    script.feed(ExecEvent::TaskExited { tid: THREAD });
    script.access(CHILD_PID, PAGE_A + 0x20, MOV_EAX_FROM_RDI, |regs| regs.rax = 1);
    script.end();
    script.assert_snapshot(
        "core_thread_exits_while_stepping_pkey",
        "with a protection key, thread 4322 ends while its store is stepped: its exit gets no \
         action and its store is not recorded; the main thread's access is traced as usual",
    );
}

#[test]
fn thread_exits_while_stepping_releases_held() {
    let mut script = Script::new(MPROTECT);
    script.spawn_thread(THREAD);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(THREAD, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_TO_RDI));
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x20, PAGE_A + 0x20, MOV_EAX_FROM_RDI));
    script.syscall_returns(THREAD, 0);
    script.feed(ExecEvent::TaskExited { tid: THREAD });
    script.syscall_returns(CHILD_PID, 0);
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 1);
    script.syscall_returns(CHILD_PID, 0);
    script.end();
    script.assert_snapshot(
        "core_thread_exits_while_stepping",
        "with mprotect, thread 4322 faults and the core interrupts the main thread, which stops \
         at its own fault and is held; thread 4322 ends while its store is stepped with page A \
         open: the exit releases the main thread, whose access then runs; the store is not \
         recorded",
    );
}

#[test]
fn protocol_stop_from_second_thread() {
    let mut script = Script::new(MPROTECT);
    script.spawn_thread(THREAD);
    let request =
        StartRequest { pages: vec![pages(PAGE_A, 1)], page_size: PAGE_SIZE, protection: MPROTECT, emulate: false };
    script.send(THREAD, ChildMessage::Start(request));
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x30, PAGE_A + 0x30, MOV_EAX_TO_RDI));
    script.interrupted(THREAD);
    script.syscall_returns(CHILD_PID, 0);
    script.instruction_done(CHILD_PID, 2, |_| {});
    script.syscall_returns(CHILD_PID, 0);
    script.send(THREAD, ChildMessage::End);
    script.assert_snapshot(
        "core_protocol_stop_second_thread",
        "thread 4322 starts and ends the call: the core receives each message at that thread's \
         protocol stop and resumes that thread before replying; the main thread's store is \
         traced in between, with thread 4322 interrupted while the page is open",
    );
}

#[test]
fn end_marker_of_wrong_thread_ignored() {
    let mut script = Script::new(PKEY);
    script.start(&[pages(PAGE_A, 1)]);
    let regs = Registers {
        rip: END_MARKER_RIP,
        orig_rax: SYS_GETPPID,
        rdi: PROTOCOL_COOKIE,
        rsi: THREAD as u64,
        ..base_registers()
    };
    script.feed(ExecEvent::Syscall { tid: CHILD_PID, regs, phase: SyscallPhase::Entry, compat: false });
    script.access(CHILD_PID, PAGE_A + 0x10, MOV_EAX_FROM_RDI, |_| {});
    script.end();
    script.assert_snapshot(
        "core_end_marker_wrong_thread",
        "a getppid whose arguments carry the cookie but another thread's id is an ordinary \
         system call: the call goes on, its read is traced, and the real end marker returns it",
    );
}

#[test]
fn emulated_rep_stos_is_one_run() {
    let mut script = Script::new(PKEY);
    script.start_with(&[pages(PAGE_A, 2)], true);
    let regs = Registers { rip: CODE, rdi: PAGE_A + 0xff0, rcx: 0x20, rax: 0x5a, ..base_registers() };
    let info = SigInfo::new(SIGSEGV, SEGV_PKUERR, PAGE_A + 0xff0);
    script.feed(stop(CHILD_PID, info, regs, REP_STOSB.to_vec(), Disposition::Default));
    script.end();
    script.assert_snapshot(
        "core_emulated_rep_stos",
        "rep stosb of 32 bytes across two traced pages is carried out in one stop: the \
         supervisor writes the filled bytes, sets rdi past the block and rcx to zero, and the \
         trace records the block as one run of 32 one-byte writes",
    );
}

#[test]
fn copy_out_is_carried_out() {
    let mut script = Script::new(MPROTECT);
    script.start_with(&[pages(PAGE_A, 1)], true);
    let regs = Registers { rip: CODE, rsi: PAGE_A + 0x10, rdi: UNTRACED, rcx: 0x20, ..base_registers() };
    let info = SigInfo::new(SIGSEGV, SEGV_ACCERR, PAGE_A + 0x10);
    script.feed(stop(CHILD_PID, info, regs, REP_MOVSB.to_vec(), Disposition::Default));
    script.feed(ExecEvent::Memory { tid: CHILD_PID, bytes: Some((0x01..=0x20).collect()) });
    script.feed(ExecEvent::MemoryWritten { tid: CHILD_PID, written: true });
    script.end();
    script.assert_snapshot(
        "core_copy_out_of_traced_pages",
        "rep movsb of 32 bytes from a traced page to memory with no traced page: the core reads \
         the source through /proc/PID/mem, writes the destination only as the program could, \
         and once that write is done sets the registers past the block and continues; the \
         trace holds the 32 reads alone",
    );
}

#[test]
fn unreadable_copy_source_is_stepped() {
    let mut script = Script::new(MPROTECT);
    script.start_with(&[pages(PAGE_A, 1)], true);
    let regs = Registers { rip: CODE, rsi: UNTRACED, rdi: PAGE_A, rcx: 0x20, ..base_registers() };
    let info = SigInfo::new(SIGSEGV, SEGV_ACCERR, PAGE_A);
    script.feed(stop(CHILD_PID, info, regs, REP_MOVSB.to_vec(), Disposition::Default));
    script.feed(ExecEvent::Memory { tid: CHILD_PID, bytes: None });
    script.assert_snapshot(
        "core_copy_in_unreadable_source",
        "rep movsb into a traced page from memory the program cannot read: the read as the \
         program fails, so the instruction is stepped, opening the page with mprotect first, \
         and then faults for real",
    );
}

#[test]
fn emulated_vector_store_reads_registers() {
    let mut script = Script::new(PKEY);
    script.start_with(&[pages(PAGE_A, 1)], true);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x20, PAGE_A + 0x20, MOVUPS_XMM2_TO_RDI));
    let xmm2 = [0x1111_1111_1111_1111, 0x2222_2222_2222_2222, 0, 0, 0, 0, 0, 0];
    let vectors = VectorRegisters { zmm: vec![[0; 8], [0; 8], xmm2], k: [0; 8] };
    script.feed(ExecEvent::VectorRegisters { tid: CHILD_PID, vectors });
    script.end();
    script.assert_snapshot(
        "core_emulated_vector_store",
        "movups [rdi], xmm2 on a traced page: the core reads the vector registers, writes the \
         16 bytes of xmm2, moves rip past the instruction and continues, with one recorded write",
    );
}

#[test]
fn emulated_vector_load_sets_register() {
    let mut script = Script::new(MPROTECT);
    script.start_with(&[pages(PAGE_A, 1)], true);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x40, PAGE_A + 0x40, VMOVDQU_YMM1_FROM_RDI));
    script.feed(ExecEvent::Memory { tid: CHILD_PID, bytes: Some((0x01..=0x20).collect()) });
    script.end();
    script.assert_snapshot(
        "core_emulated_vector_load",
        "vmovdqu ymm1, [rdi] on a traced page under mprotect: the core reads the 32 bytes, \
         sets the low 64 bytes of register 1 to them followed by zeros (VEX zeroes the upper \
         part), moves rip past the instruction and continues, with one recorded read",
    );
}

#[test]
fn end_while_stepping_pkey() {
    let mut script = Script::new(PKEY);
    script.spawn_thread(THREAD);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(THREAD, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_TO_RDI));
    script.end();
    script.instruction_done(THREAD, 2, |_| {});
    script.assert_snapshot(
        "core_end_while_stepping_pkey",
        "with a protection key, the main thread ends the call while thread 4322 steps its store \
         with the key open: End returns no access, and when the step ends the key is closed \
         before thread 4322 resumes, because the child keeps the key for later calls",
    );
}

#[test]
fn thread_created_while_stopping_threads() {
    let mut script = Script::new(MPROTECT);
    script.spawn_thread(THREAD);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_FROM_RDI));
    // Thread 4322 stops for the interrupt by reporting the creation of a thread of its own.
    script.feed(ExecEvent::NewTask { parent: THREAD, tid: THIRD_THREAD, kind: TaskKind::Thread });
    script.feed(first_stop(THIRD_THREAD));
    script.syscall_returns(CHILD_PID, 0);
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 3);
    script.syscall_returns(CHILD_PID, 0);
    script.assert_snapshot(
        "core_thread_created_while_stopping",
        "with mprotect, the main thread faults and the core interrupts thread 4322, which stops \
         reporting a new thread 4323: the page is opened only after thread 4323's first stop, \
         which keeps it stopped, and all three threads resume when the main thread's access ends",
    );
}

#[test]
fn held_access_needs_vector_registers() {
    let mut script = Script::new(MPROTECT);
    script.spawn_thread(THREAD);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_FROM_RDI));
    // Thread 4322 stops for the interrupt at its own fault, a gather whose decoding needs its
    // vector registers.
    script.feed(script.fault(THREAD, PAGE_A + 0x40, PAGE_A + 0x40, VPGATHERDD));
    script.syscall_returns(CHILD_PID, 0);
    script.instruction_done(CHILD_PID, 2, |regs| regs.rax = 3);
    script.syscall_returns(CHILD_PID, 0);
    script.interrupted(CHILD_PID);
    script.feed(ExecEvent::VectorRegisters { tid: THREAD, vectors: gather_vectors() });
    script.syscall_returns(THREAD, 0);
    script.instruction_done(THREAD, 6, |_| {});
    script.syscall_returns(THREAD, 0);
    script.assert_snapshot(
        "core_held_access_needs_vectors",
        "with mprotect, thread 4322 is held at a gather while the main thread's access runs; \
         once the main thread has been interrupted again, the core asks for thread 4322's vector \
         registers and keeps the main thread stopped until that access has ended",
    );
}

#[test]
fn fork_released_after_end() {
    let mut script = Script::new(MPROTECT);
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: FORKED, kind: TaskKind::Fork });
    script.end();
    script.feed(first_stop(FORKED));
    script.syscall_returns(FORKED, 0);
    script.assert_snapshot(
        "core_fork_released_after_end",
        "with mprotect, the program forks during a call and ends the call before the forked \
         process's first stop: the process still has its copy of the page protected, so the \
         gadget opens it there before it is detached",
    );
}

/// `si_code` of a SIGSYS raised by syscall user dispatch.
const SYS_USER_DISPATCH: i32 = 2;
const SIGSYS: i32 = 31;
/// The x86-64 number of `read`.
const SYS_READ: u64 = 0;
/// The program's code that syscall user dispatch lets through: the gadget, then trampolines.
const EXEMPT: u64 = 0x7fff_f7ff_0000;
/// `si_arch` values of a SIGSYS: a 64-bit `syscall` and a 32-bit `int 0x80`.
const AUDIT_ARCH_X86_64: u64 = 0xc000_003e;
const AUDIT_ARCH_I386: u64 = 0x4000_0003;

impl Script {
    /// Plays the driver seeing call number `call` of the main thread on the call board, with
    /// `exempt_len` bytes of exempt code.
    fn board_with(&mut self, call: u64, active: bool, pages: &[PageRange], exempt_len: u64) {
        let request = StartRequest { pages: pages.to_vec(), page_size: PAGE_SIZE, protection: self.protection, emulate: true };
        let exempt = PageRange { start: EXEMPT, len: exempt_len };
        self.feed(ExecEvent::CallBoard(BoardCall { call, active, tid: CHILD_PID, request, exempt, received: 0 }));
    }

    fn board(&mut self, call: u64, active: bool, pages: &[PageRange]) {
        self.board_with(call, active, pages, 0x1_0000);
    }

    /// Plays thread `tid` stopped with the SIGSYS of a blocked system call whose `syscall`
    /// (or `int 0x80`) ends at `after`.
    fn blocked_syscall(&mut self, tid: i32, after: u64, regs: Registers, arch: u64) {
        let mut info = SigInfo::new(SIGSYS, SYS_USER_DISPATCH, after);
        info.raw[3] = (arch << 32) | regs.rax;
        let regs = Registers { rip: after, orig_rax: regs.rax, ..regs };
        self.feed(stop(tid, info, regs, Vec::new(), Disposition::Default));
    }
}

#[test]
fn board_call_publishes_its_accesses() {
    let mut script = Script::new(MPROTECT);
    script.board(1, true, &[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_TO_RDI));
    script.board(1, false, &[pages(PAGE_A, 1)]);
    script.feed(script.fault(CHILD_PID, PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_TO_RDI));
    script.assert_snapshot(
        "core_board_call",
        "a call announced on the call board: the fault's store is carried out and published to \
         the board before the thread continues, with no start or end stop; once the board shows \
         the call ended, a fault at the same address is a crash",
    );
}

#[test]
fn board_system_call_runs_from_trampoline() {
    let mut script = Script::new(MPROTECT);
    script.spawn_thread(THREAD);
    script.board(1, true, &[pages(PAGE_A, 1)]);
    let site = CODE + SYSCALL_LEN;
    let read = Registers { rax: SYS_READ, rsi: PAGE_A, rdx: 8, ..base_registers() };
    script.blocked_syscall(THREAD, site, read, AUDIT_ARCH_X86_64);
    script.blocked_syscall(THREAD, site, Registers { rsi: PAGE_A + 0x2000, ..read }, AUDIT_ARCH_X86_64);
    // A signal arrives as the second read returns, before the trampoline jumps back.
    let returned = Registers { rip: EXEMPT + 0x10 + SYSCALL_LEN, rcx: EXEMPT + 0x12, rax: 8, ..base_registers() };
    script.feed(alarm(THREAD, returned));
    script.assert_snapshot(
        "core_board_system_call",
        "a second thread's read into a traced page during a board call: at the SIGSYS the core \
         notes the read, writes a trampoline (syscall; mov rcx, site; jmp rcx) after the gadget \
         and points the thread at it; the next read from the same site reuses it; a signal \
         that stops the thread inside the trampoline is delivered with rip and rcx at the site",
    );
}

#[test]
fn board_int80_system_call_stepped() {
    let mut script = Script::new(MPROTECT);
    script.board(1, true, &[pages(PAGE_A, 1)]);
    let site = CODE + SYSCALL_LEN;
    // 32-bit getpid; r11 is the program's own value, which int 0x80 leaves alone.
    let getpid = Registers { rax: 20, r11: 0x1234_5f00, ..base_registers() };
    script.blocked_syscall(CHILD_PID, site, getpid, AUDIT_ARCH_I386);
    script.feed(trap(CHILD_PID, TRAP_BRKPT, Registers { rip: site, rax: CHILD_PID as u64, ..getpid }));
    script.assert_snapshot(
        "core_board_int80",
        "int 0x80 during a board call has 32-bit numbers, which the core does not check, and \
         cannot run from a 64-bit trampoline: the core opens the thread's selector, moves rip \
         back onto the instruction and steps it, then blocks the selector again and continues, \
         leaving r11 as it is",
    );
}

#[test]
fn board_steps_when_trampolines_full() {
    let mut script = Script::new(MPROTECT);
    // Room for the gadget only.
    script.board_with(1, true, &[pages(PAGE_A, 1)], 0x10);
    let site = CODE + SYSCALL_LEN;
    let read = Registers { rax: SYS_READ, rsi: PAGE_A, rdx: 8, eflags: 0x246, ..base_registers() };
    script.blocked_syscall(CHILD_PID, site, read, AUDIT_ARCH_X86_64);
    let trap_flag = 0x100;
    let done = Registers { rip: site, rax: (-14i64) as u64, r11: 0x246 | trap_flag, ..read };
    script.feed(trap(CHILD_PID, TRAP_BRKPT, done));
    // The step over rt_sigreturn ends in the interrupted code, whose r11 has bit 8 set.
    let sigreturn = Registers { rax: 15, ..base_registers() };
    script.blocked_syscall(CHILD_PID, site, sigreturn, AUDIT_ARCH_X86_64);
    script.feed(trap(CHILD_PID, TRAP_TRACE, Registers { rip: INTERRUPTED_RIP, r11: 0x1234_5f00, ..base_registers() }));
    script.assert_snapshot(
        "core_board_step_fallback",
        "with no room for a trampoline the core steps the read with the thread's selector open, \
         then clears the trap flag that syscall saved in r11 and blocks the selector again; \
         after a stepped rt_sigreturn r11 is the interrupted code's and stays as it is",
    );
}

#[test]
fn new_thread_loses_step_flag() {
    let mut script = Script::new(MPROTECT);
    script.feed(ExecEvent::NewTask { parent: CHILD_PID, tid: THREAD, kind: TaskKind::Thread });
    // The parent's clone was stepped, so syscall saved the trap flag in the new thread's r11.
    let regs = Registers { rip: CLONE_RETURN_RIP, r11: 0x346, ..base_registers() };
    script.feed(ExecEvent::OtherStop { tid: THREAD, regs: Some(regs) });
    script.assert_snapshot(
        "core_new_thread_step_flag",
        "a thread made by a stepped clone stops first with the step's trap flag in r11 (0x346) \
         while its flags lack it: the core clears the bit before the thread runs",
    );
}
