//! Snapshot tests of the supervisor core's full transcripts: each event fed to
//! [`Supervisor::handle_event`] next to the actions it returned.
//!
//! The snapshots live in the crate's top-level `snapshots/` directory. To review a change,
//! run `INSTA_UPDATE=always cargo test --test core_snapshots` (or `cargo insta review`) and
//! read the diff. To keep the files short, registers list only their non-zero fields, the raw
//! `siginfo_t` is left out while it is all zeros, and addresses, lengths and register values
//! are written in hex.
//!
//! The instruction bytes are real x86-64 encodings, as `objdump -D -b binary -m i386:x86-64`
//! disassembles them:
//! - `8b 07`: `mov eax, dword [rdi]`
//! - `89 07`: `mov dword [rdi], eax`
//! - `01 07`: `add dword [rdi], eax`
//! - `48 8b 07`: `mov rax, qword [rdi]`
//! - `a4`: `movs byte [rdi], byte [rsi]`

use ffitrace::core::{
    Action, Disposition, ExecEvent, SigInfo, SignalStop, Supervisor, PROTOCOL_COOKIE, PROTOCOL_SIGNAL,
};
use ffitrace::messages::{ChildMessage, StartRequest};
use ffitrace::regs::Registers;
use ffitrace::PageRange;
use serde::Serialize;
use serde_json::{Map, Value};

const CHILD_PID: i32 = 4321;
const PAGE_SIZE: u64 = 0x1000;
/// The first traced page; [`PAGE_B`] follows it directly.
const PAGE_A: u64 = 0x7f00_0001_0000;
const PAGE_B: u64 = PAGE_A + PAGE_SIZE;
/// Address of the child's `syscall` instruction that the core runs `mprotect` through.
const GADGET: u64 = 0x5555_5555_9000;
/// Address of the native instruction that touches the traced pages.
const CODE: u64 = 0x5555_5555_a000;
/// Where the child sits when it stops itself with the protocol signal.
const PROTOCOL_STOP_RIP: u64 = 0x7fff_f7e4_2000;
/// Length of the `syscall` instruction: a step over the gadget moves `rip` this far.
const SYSCALL_LEN: u64 = 2;

const SIGTRAP: i32 = 5;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGALRM: i32 = 14;
/// `si_code` of a SIGSEGV on a mapped page the access is not allowed on.
const SEGV_ACCERR: i32 = 2;
/// `si_code` of a SIGSEGV on an unmapped address.
const SEGV_MAPERR: i32 = 1;
/// `si_code` of the trap Linux reports after single-stepping over a `syscall` instruction.
const TRAP_BRKPT: i32 = 1;
/// `si_code` of the trap after single-stepping any other instruction.
const TRAP_TRACE: i32 = 2;
/// `si_code` of a signal the kernel sends for its own reasons, such as an expired `alarm`.
const SI_KERNEL: i32 = 0x80;
const ENOMEM: i64 = 12;

const MOV_EAX_FROM_RDI: &[u8] = &[0x8b, 0x07];
const MOV_EAX_TO_RDI: &[u8] = &[0x89, 0x07];
const ADD_EAX_TO_RDI: &[u8] = &[0x01, 0x07];
const MOV_RAX_FROM_RDI: &[u8] = &[0x48, 0x8b, 0x07];
const MOVSB: &[u8] = &[0xa4];

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
    transcript: Vec<Entry>,
}

impl Script {
    fn new() -> Script {
        Script { core: Supervisor::new(CHILD_PID), transcript: Vec::new() }
    }

    /// Feeds one event and records it with the actions it produced.
    fn feed(&mut self, event: ExecEvent) {
        let actions = self.core.handle_event(event.clone());
        self.transcript.push(Entry { event, actions });
    }

    /// Plays the child sending `message` and stopping with the protocol signal.
    fn send(&mut self, message: ChildMessage) {
        self.feed(protocol_stop());
        self.feed(ExecEvent::Message(message));
    }

    /// Plays the child starting a traced call on `pages`.
    fn start(&mut self, pages: &[PageRange]) {
        self.send(ChildMessage::Start(StartRequest {
            pages: pages.to_vec(),
            page_size: PAGE_SIZE,
            syscall_gadget: GADGET,
        }));
    }

    /// Returns the registers of the last `SetRegisters` action, which the child now has.
    fn child_registers(&self) -> Registers {
        let mut actions = self.transcript.iter().rev().flat_map(|entry| entry.actions.iter().rev());
        actions
            .find_map(|action| match action {
                Action::SetRegisters(regs) => Some(*regs),
                _ => None,
            })
            .expect("the core set the child's registers earlier in the script")
    }

    /// Plays the step over the `syscall` gadget ending with `mprotect` returning `result`.
    fn syscall_returns(&mut self, result: i64) {
        let mut regs = self.child_registers();
        assert_eq!(regs.rip, GADGET, "the child was not pointed at the gadget");
        regs.rip += SYSCALL_LEN;
        regs.rcx = regs.rip;
        regs.r11 = regs.eflags;
        regs.rax = result as u64;
        self.feed(trap(TRAP_BRKPT, regs));
    }

    /// Plays the step over the faulting instruction of `len` bytes. `effect` applies its
    /// register changes.
    fn instruction_done(&mut self, len: u64, effect: impl FnOnce(&mut Registers)) {
        let mut regs = self.child_registers();
        assert_eq!(regs.rip, CODE, "the child was not pointed back at the faulting instruction");
        regs.rip += len;
        effect(&mut regs);
        self.feed(trap(TRAP_TRACE, regs));
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

/// Builds the protocol-signal stop the child makes after sending a message.
fn protocol_stop() -> ExecEvent {
    let info = SigInfo { pid: CHILD_PID, value: PROTOCOL_COOKIE, ..SigInfo::new(PROTOCOL_SIGNAL, -1, 0) };
    let regs = Registers { rip: PROTOCOL_STOP_RIP, ..base_registers() };
    stop(info, regs, Vec::new(), Disposition::Caught)
}

/// Builds a SIGSEGV raised by the instruction `code` at [`CODE`], which accesses memory at
/// `rdi`. The kernel reports `fault_addr` as the address that faulted.
fn segv(fault_addr: u64, rdi: u64, code: &[u8]) -> ExecEvent {
    let regs = Registers { rip: CODE, rdi, rax: 0x2a, ..base_registers() };
    stop(SigInfo::new(SIGSEGV, SEGV_ACCERR, fault_addr), regs, code.to_vec(), Disposition::Default)
}

/// Builds a SIGSEGV raised by `mov eax,[rdi]` at [`CODE`] with `rdi` null.
fn null_read() -> ExecEvent {
    let regs = Registers { rip: CODE, rax: 0x2a, ..base_registers() };
    stop(SigInfo::new(SIGSEGV, SEGV_MAPERR, 0), regs, MOV_EAX_FROM_RDI.to_vec(), Disposition::Default)
}

/// Builds the trap that ends a single-step, with the child's registers after it.
fn trap(code: i32, regs: Registers) -> ExecEvent {
    stop(SigInfo::new(SIGTRAP, code, 0), regs, Vec::new(), Disposition::Default)
}

/// Builds the stop for an expired `alarm`, taken with `regs` before the next instruction ran.
fn alarm(regs: Registers) -> ExecEvent {
    stop(SigInfo::new(SIGALRM, SI_KERNEL, 0), regs, Vec::new(), Disposition::Caught)
}

fn stop(info: SigInfo, regs: Registers, code: Vec<u8>, disposition: Disposition) -> ExecEvent {
    ExecEvent::Signal(SignalStop { info, regs, code, disposition })
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
                    "code" if value.is_array() => hex_bytes(value),
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

#[test]
fn read_access() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x10, PAGE_A + 0x10, MOV_EAX_FROM_RDI));
    script.syscall_returns(0);
    script.instruction_done(2, |regs| regs.rax = 0x1234_5678);
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_read",
        "mov eax,[rdi] on a traced page: open the page, step the load, close the page, resume \
         with the loaded value; End returns one 4-byte read",
    );
}

#[test]
fn write_access() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x20, PAGE_A + 0x20, MOV_EAX_TO_RDI));
    script.syscall_returns(0);
    script.instruction_done(2, |_| {});
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_write",
        "mov [rdi],eax on a traced page: the same open, step, close sequence; End returns one \
         4-byte write",
    );
}

#[test]
fn read_modify_write_access() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x30, PAGE_A + 0x30, ADD_EAX_TO_RDI));
    script.syscall_returns(0);
    script.instruction_done(2, |regs| regs.eflags = 0x202);
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_read_modify_write",
        "add [rdi],eax on a traced page: one step records a 4-byte read, then a 4-byte write \
         of the same bytes",
    );
}

#[test]
fn straddling_access_both_pages_traced() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 2)]);
    script.feed(segv(PAGE_B - 4, PAGE_B - 4, MOV_RAX_FROM_RDI));
    script.syscall_returns(0);
    script.instruction_done(3, |regs| regs.rax = 0x1122_3344_5566_7788);
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_straddle_both_traced",
        "mov rax,[rdi] with rdi 4 bytes before the end of a page, both pages traced: one \
         mprotect opens and one closes both pages, and the read is one 8-byte access",
    );
}

#[test]
fn straddling_access_first_page_traced() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_B - 4, PAGE_B - 4, MOV_RAX_FROM_RDI));
    script.syscall_returns(0);
    script.instruction_done(3, |regs| regs.rax = 0x1122_3344_5566_7788);
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_straddle_first_traced",
        "mov rax,[rdi] with rdi 4 bytes before the end of the only traced page: only that \
         page is opened and closed, and the read is one 8-byte access",
    );
}

#[test]
fn straddling_access_second_page_traced() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_B, 1)]);
    // The kernel reports the first byte of the inaccessible page, not the access's start.
    script.feed(segv(PAGE_B, PAGE_B - 4, MOV_RAX_FROM_RDI));
    script.syscall_returns(0);
    script.instruction_done(3, |regs| regs.rax = 0x1122_3344_5566_7788);
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_straddle_second_traced",
        "mov rax,[rdi] with rdi 4 bytes before an untraced page ends and the next page traced: \
         only the traced page is opened and closed, and the read is one 8-byte access at rdi",
    );
}

#[test]
fn segfault_outside_traced_pages() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(null_read());
    script.feed(ExecEvent::Killed { signal: SIGSEGV, core_dumped: true });
    script.assert_snapshot(
        "core_segfault_outside_pages",
        "a null read inside a traced call with SIGSEGV at its default disposition: report the \
         crash with the call's pages, deliver the SIGSEGV, then finish with 128 + 11 when the \
         program dies",
    );
}

#[test]
fn child_killed_while_stepping() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x40, PAGE_A + 0x40, MOV_EAX_TO_RDI));
    script.syscall_returns(0);
    script.feed(ExecEvent::Killed { signal: SIGKILL, core_dumped: false });
    script.assert_snapshot(
        "core_killed_while_stepping",
        "SIGKILL while the faulting store is being stepped with its page open: report the \
         death during the call with the pages and an empty trace, then finish with 128 + 9",
    );
}

#[test]
fn signal_during_step_is_deferred() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x50, PAGE_A + 0x50, MOV_EAX_FROM_RDI));
    script.syscall_returns(0);
    let at_instruction = script.child_registers();
    script.feed(alarm(at_instruction));
    script.instruction_done(2, |regs| regs.rax = 7);
    script.syscall_returns(0);
    script.assert_snapshot(
        "core_signal_during_step",
        "SIGALRM stops the child before the load is stepped: the core repeats the step without \
         the signal, closes the page, and delivers the SIGALRM with the final Continue",
    );
}

#[test]
fn second_start_rejected() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.start(&[pages(PAGE_B, 1)]);
    script.feed(segv(PAGE_A + 0x60, PAGE_A + 0x60, MOV_EAX_TO_RDI));
    script.syscall_returns(0);
    script.instruction_done(2, |_| {});
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_second_start_rejected",
        "a second Start during a traced call is rejected and the first call goes on: its page \
         is still traced and End returns its write",
    );
}

#[test]
fn end_without_start_rejected() {
    let mut script = Script::new();
    script.send(ChildMessage::End);
    script.feed(ExecEvent::Exited { status: 0 });
    script.assert_snapshot(
        "core_end_without_start",
        "End outside a traced call is rejected and the child resumed; a normal exit then \
         finishes with status 0",
    );
}

#[test]
fn start_with_invalid_pages_rejected() {
    let mut script = Script::new();
    script.start(&[PageRange { start: PAGE_A + 0x800, len: PAGE_SIZE }]);
    script.feed(segv(PAGE_A + 0x800, PAGE_A + 0x800, MOV_EAX_FROM_RDI));
    script.assert_snapshot(
        "core_start_with_invalid_pages",
        "a Start with an unaligned range is rejected, so a later fault at that address is not \
         traced but reported as a crash",
    );
}

#[test]
fn crash_while_stepping() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    // movsb copies a byte from the traced page to a null pointer: the read faults first.
    let regs = Registers { rip: CODE, rsi: PAGE_A, rdi: 0, ..base_registers() };
    script.feed(stop(SigInfo::new(SIGSEGV, SEGV_ACCERR, PAGE_A), regs, MOVSB.to_vec(), Disposition::Default));
    script.syscall_returns(0);
    // Stepped with the page open, the same instruction faults on its write.
    script.feed(stop(SigInfo::new(SIGSEGV, SEGV_MAPERR, 0), regs, MOVSB.to_vec(), Disposition::Default));
    script.syscall_returns(0);
    script.feed(ExecEvent::Killed { signal: SIGSEGV, core_dumped: true });
    script.assert_snapshot(
        "core_crash_while_stepping",
        "movsb from a traced page to a null pointer: the stepped instruction faults on its \
         write, so report the crash, close the page, restore the registers at the crash and \
         deliver the SIGSEGV; the death that follows adds no second report",
    );
}

#[test]
fn mprotect_failure_kills() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A, PAGE_A, MOV_EAX_TO_RDI));
    script.syscall_returns(-ENOMEM);
    script.feed(ExecEvent::Killed { signal: SIGKILL, core_dumped: false });
    script.assert_snapshot(
        "core_mprotect_failure",
        "mprotect through the gadget returns -ENOMEM: report a protocol error with the trace so \
         far and kill the child, then finish with 128 + 9",
    );
}

#[test]
fn other_stop_while_stepping() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x70, PAGE_A + 0x70, MOV_EAX_FROM_RDI));
    script.syscall_returns(0);
    script.feed(ExecEvent::OtherStop);
    script.instruction_done(2, |regs| regs.rax = 9);
    script.syscall_returns(0);
    script.assert_snapshot(
        "core_other_stop_while_stepping",
        "a stop that is not a signal delivery while the load is stepped: the core repeats the \
         step instead of resuming the child with its page open",
    );
}

/// `maskmovq mm0, mm1`: a byte-masked store to [rdi] whose mask lives in an MMX register the
/// decoder does not read, so the store is only a possible write.
const MASKMOVQ: &[u8] = &[0x0f, 0xf7, 0xc1];

#[test]
fn possible_write_that_writes_nothing() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x40, PAGE_A + 0x40, MASKMOVQ));
    script.syscall_returns(0);
    script.instruction_done(3, |_| {});
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_possible_write_not_taken",
        "maskmovq is stepped with its page opened read-only (mprotect 1); it completes without \
         a fault, so it wrote nothing and the trace holds no access for it",
    );
}

#[test]
fn possible_write_that_writes() {
    let mut script = Script::new();
    script.start(&[pages(PAGE_A, 1)]);
    script.feed(segv(PAGE_A + 0x40, PAGE_A + 0x40, MASKMOVQ));
    script.syscall_returns(0);
    let at_instruction = script.child_registers();
    let write_fault = SigInfo::new(SIGSEGV, SEGV_ACCERR, PAGE_A + 0x42);
    script.feed(stop(write_fault, at_instruction, MASKMOVQ.to_vec(), Disposition::Default));
    script.syscall_returns(0);
    script.instruction_done(3, |_| {});
    script.syscall_returns(0);
    script.send(ChildMessage::End);
    script.assert_snapshot(
        "core_possible_write_taken",
        "maskmovq faults while its page is open read-only, so it writes: the page is reopened \
         read-write (mprotect 3), the store is stepped again and recorded as a certain 8-byte \
         write",
    );
}
