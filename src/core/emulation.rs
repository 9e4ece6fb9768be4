//! Carrying out a faulting instruction in the supervisor: one stop instead of a single-step.
//!
//! Plans whose every access lies on traced pages are taken. So is a `rep movs` between a
//! traced block and one with no traced page, as when native code copies a traced buffer into
//! its own memory or back. Both are taken only while the native code has not changed the
//! traced pages' mapping. The supervisor reads and writes traced pages through
//! `/proc/PID/mem`, which ignores protection, so it must know they are readable and
//! writable. Memory off the traced pages is read and written only as the program itself
//! could (`process_vm_readv`, `process_vm_writev`): where that fails, the instruction is
//! stepped and faults for real.
//!
//! ```text
//! fault ─► (ReadMemory ─► Memory) ─► WriteMemory + SetRegisters(after) + Continue
//! copy out: ReadMemory ─► Memory ─► WriteMemoryAsProgram ─► MemoryWritten ─► SetRegisters + Continue
//! copy in:  ReadMemoryAsProgram ─► Memory ─► WriteMemory + SetRegisters(after) + Continue
//! ```

use super::{Action, Call, SignalStop};
use crate::decode::{plan_access_x86_64, EmulationPlan, PlannedAccess};
use crate::event::AccessRun;
use crate::regs::{Registers, VectorRegisters};

/// A fault whose instruction is being carried out, waiting for the memory it reads or for a
/// write off the traced pages.
#[derive(Debug)]
pub(crate) struct Emulating {
    stop: SignalStop,
    plan: EmulationPlan,
    /// Whether the read (first) and the write (second) access of the plan's pattern lie on
    /// traced pages. Both do, except for a copy to or from memory off them.
    traced: [bool; 2],
    /// The registers after the instruction, once a write off the traced pages is under way.
    writing: Option<Registers>,
}

/// The next step after memory was read or written for an instruction being carried out.
pub(super) enum Next {
    /// The instruction is carried out: these actions finish it.
    Done(Vec<Action>),
    /// These actions run, and the instruction waits for the result.
    Wait(Emulating, Vec<Action>),
    /// The instruction is stepped instead. `disable` is set when memory on traced pages could
    /// not be reached, so the call carries out no more instructions.
    Step { stop: SignalStop, disable: bool },
}

/// How much of an access's bytes lie on traced pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coverage {
    All,
    None,
    Part,
}

/// Returns what to do with the faulting instruction: carry it out when the call allows it and
/// its accesses lie on traced pages (see the module documentation), read the vector registers
/// first, or step it.
pub(super) fn plan(call: &Call, stop: &SignalStop, vectors: Option<&VectorRegisters>) -> PlannedAccess {
    if !call.emulation {
        return PlannedAccess::Step;
    }
    match plan_access_x86_64(&stop.code, &stop.regs, vectors) {
        PlannedAccess::Ready(plan) => match on_one_side(call, plan) {
            Some(plan) if traced_positions(call, &plan).is_some() => PlannedAccess::Ready(plan),
            _ => PlannedAccess::Step,
        },
        PlannedAccess::NeedsVectorRegisters(access) if coverage(call, access.addr, access.end()) == Coverage::All => {
            PlannedAccess::NeedsVectorRegisters(access)
        }
        _ => PlannedAccess::Step,
    }
}

/// Cuts a `rep` plan to the elements whose accesses stay on the side of the traced pages
/// where their first element lies. A block that runs off the traced pages is carried out up
/// to their end, and the rest runs natively. A block that runs onto them faults again there.
/// Returns `None` when a first access lies partly on traced pages.
fn on_one_side(call: &Call, plan: EmulationPlan) -> Option<EmulationPlan> {
    let run = plan.accesses();
    if run.count() < 2 {
        return Some(plan);
    }
    let mut count = run.count();
    for access in run.pattern() {
        let (low, high) = call.pages.side_of(access.addr);
        let size = u64::from(access.size);
        if access.addr.checked_add(size)? > high {
            return None;
        }
        let stride = run.stride().unsigned_abs().max(1);
        let fitting = match run.stride() >= 0 {
            true => (high - access.addr - size) / stride + 1,
            false => (access.addr - low) / stride + 1,
        };
        count = count.min(fitting);
    }
    Some(plan.first_elements(count))
}

/// Returns which accesses of the plan's pattern lie on traced pages, or `None` when the plan
/// cannot be carried out: an access lies partly on them, or a plan other than a two-access
/// copy has one off them.
fn traced_positions(call: &Call, plan: &EmulationPlan) -> Option<[bool; 2]> {
    let accesses = plan.accesses();
    let mut traced = [true; 2];
    for (position, slot) in traced.iter_mut().enumerate().take(accesses.pattern().len()) {
        let (start, end) = accesses.extent(position)?;
        *slot = match coverage(call, start, end) {
            Coverage::All => true,
            Coverage::None => false,
            Coverage::Part => return None,
        };
    }
    let copy = accesses.pattern().len() == 2;
    match traced {
        [true, true] => Some(traced),
        [true, false] | [false, true] if copy => Some(traced),
        _ => None,
    }
}

/// Tells whether all, none or part of the pages of `start..end` are traced.
fn coverage(call: &Call, start: u64, end: u64) -> Coverage {
    if end <= start {
        return Coverage::Part;
    }
    let page = call.pages.page_size();
    let first = start & !(page - 1);
    let last = (end - 1) & !(page - 1);
    let span = last - first + page;
    let traced: u64 = call.pages.traced_pages_of(start, end).iter().map(|run| run.len).sum();
    match traced {
        0 => Coverage::None,
        all if all == span => Coverage::All,
        _ => Coverage::Part,
    }
}

/// Starts carrying out `plan`: reads memory first if the plan needs it, else finishes.
pub(super) fn start(call: &mut Call, stop: SignalStop, plan: EmulationPlan) -> (Option<Emulating>, Vec<Action>) {
    let traced = traced_positions(call, &plan).unwrap_or([true; 2]);
    match plan.read_request() {
        Some((addr, len)) => {
            let tid = stop.tid;
            let read = match traced[0] {
                true => Action::ReadMemory { tid, addr, len },
                false => Action::ReadMemoryAsProgram { tid, addr, len },
            };
            (Some(Emulating { stop, plan, traced, writing: None }), vec![read])
        }
        None => (None, finish(call, &stop.regs, stop.tid, &plan, traced, Vec::new())),
    }
}

impl Emulating {
    /// Continues with the memory read: finishes the instruction, or first writes off the
    /// traced pages. A failed read gives the fault back to be stepped.
    pub(super) fn complete(self, call: &mut Call, read: Option<Vec<u8>>) -> Next {
        let expected = self.plan.read_request().map_or(0, |(_, len)| len);
        let bytes = match read {
            Some(bytes) if bytes.len() == expected => bytes,
            // Only a read on traced pages failing means the supervisor cannot reach them.
            _ => return Next::Step { disable: self.traced[0], stop: self.stop },
        };
        let tid = self.stop.tid;
        if self.traced[1] {
            return Next::Done(finish(call, &self.stop.regs, tid, &self.plan, self.traced, bytes));
        }
        let after = self.plan.registers_after(&self.stop.regs, &bytes);
        match self.plan.write_request(bytes) {
            Some((addr, bytes)) => {
                let write = Action::WriteMemoryAsProgram { tid, addr, bytes };
                Next::Wait(Emulating { writing: Some(after), ..self }, vec![write])
            }
            None => Next::Step { disable: false, stop: self.stop },
        }
    }

    /// Finishes once the write off the traced pages is done, or gives the fault back to be
    /// stepped, which then faults where the program may not write.
    pub(super) fn written(self, call: &mut Call, written: bool) -> Next {
        match self.writing {
            Some(after) if written => {
                call.record_run(traced_run(&self.plan, self.traced));
                let tid = self.stop.tid;
                Next::Done(vec![Action::SetRegisters { tid, regs: after }, Action::Continue { tid, signal: None }])
            }
            _ => Next::Step { disable: false, stop: self.stop },
        }
    }
}

/// Records the plan's accesses on traced pages and returns the actions that carry it out.
/// `read` is what [`EmulationPlan::read_request`] read, and a copy's bytes move on into the
/// write unchanged.
fn finish(
    call: &mut Call,
    regs: &Registers,
    tid: i32,
    plan: &EmulationPlan,
    traced: [bool; 2],
    read: Vec<u8>,
) -> Vec<Action> {
    call.record_run(traced_run(plan, traced));
    let mut actions = Vec::new();
    let vector_write = plan.vector_register_write(&read);
    let after = plan.registers_after(regs, &read);
    if let Some((addr, bytes)) = plan.write_request(read) {
        actions.push(Action::WriteMemory { tid, addr, bytes });
    }
    // NOTE: the driver only logs a failed register write, and the thread then goes on past the
    // load. The write can fail when the thread died, or when the XSAVE area lacks a component
    // the instruction uses. The latter should not happen: the instruction reached its page
    // fault, so the CPU and the kernel support its encoding and register state.
    if let Some((register, bytes)) = vector_write {
        actions.push(Action::SetVectorRegister { tid, register: register as u8, bytes });
    }
    actions.push(Action::SetRegisters { tid, regs: after });
    actions.push(Action::Continue { tid, signal: None });
    actions
}

/// Returns the plan's run with only the accesses on traced pages.
fn traced_run(plan: &EmulationPlan, traced: [bool; 2]) -> AccessRun {
    let run = plan.accesses();
    let on_traced_pages: Vec<_> =
        run.pattern().iter().zip(traced).filter(|(_, traced)| *traced).map(|(access, _)| *access).collect();
    match on_traced_pages.len() == run.pattern().len() {
        true => run,
        // A copy keeps one access of its two: `traced_positions` allows no other case.
        false => AccessRun::new(&on_traced_pages, run.count(), run.stride()).unwrap_or(run),
    }
}
