//! Carrying out a faulting instruction in the supervisor: one stop instead of a single-step.
//!
//! Only plans whose every access lies on traced pages are taken, and only while the native
//! code has not changed those pages' mapping. The supervisor writes through `/proc/PID/mem`,
//! which ignores protection, so it must know the pages are readable and writable.
//!
//! ```text
//! fault ─► (ReadMemory ─► Memory) ─► WriteMemory + SetRegisters(after) + Continue
//! ```

use super::{Action, Call, SignalStop};
use crate::decode::{plan_access_x86_64, EmulationPlan, PlannedAccess};
use crate::regs::{Registers, VectorRegisters};

/// A fault whose instruction is being carried out, waiting for the memory it reads.
#[derive(Debug)]
pub(crate) struct Emulating {
    stop: SignalStop,
    plan: EmulationPlan,
}

/// Returns what to do with the faulting instruction: carry it out when the call allows it and
/// every access lies on traced pages, read the vector registers first, or step it.
pub(super) fn plan(call: &Call, stop: &SignalStop, vectors: Option<&VectorRegisters>) -> PlannedAccess {
    if !call.emulation {
        return PlannedAccess::Step;
    }
    match plan_access_x86_64(&stop.code, &stop.regs, vectors) {
        PlannedAccess::Ready(plan) if all_traced(call, &plan) => PlannedAccess::Ready(plan),
        PlannedAccess::NeedsVectorRegisters(access) if covered(call, access.addr, access.end()) => {
            PlannedAccess::NeedsVectorRegisters(access)
        }
        _ => PlannedAccess::Step,
    }
}

fn all_traced(call: &Call, plan: &EmulationPlan) -> bool {
    let accesses = plan.accesses();
    (0..accesses.pattern().len())
        .filter_map(|position| accesses.extent(position))
        .all(|(start, end)| covered(call, start, end))
}

/// Returns true when every page of `start..end` is traced.
fn covered(call: &Call, start: u64, end: u64) -> bool {
    let page = call.pages.page_size();
    let first = start & !(page - 1);
    let last = end.saturating_sub(1) & !(page - 1);
    let span = last.saturating_sub(first) + page;
    let traced: u64 = call.pages.traced_pages_of(start, end).iter().map(|run| run.len).sum();
    end > start && traced == span
}

/// Starts carrying out `plan`: reads memory first if the plan needs it, else finishes.
pub(super) fn start(call: &mut Call, stop: SignalStop, plan: EmulationPlan) -> (Option<Emulating>, Vec<Action>) {
    match plan.read_request() {
        Some((addr, len)) => {
            let tid = stop.tid;
            (Some(Emulating { stop, plan }), vec![Action::ReadMemory { tid, addr, len }])
        }
        None => (None, finish(call, &stop.regs, stop.tid, &plan, Vec::new())),
    }
}

impl Emulating {
    /// Finishes with the memory read, or returns the fault to be stepped when the read
    /// failed.
    pub(super) fn complete(self, call: &mut Call, read: Option<Vec<u8>>) -> Result<Vec<Action>, SignalStop> {
        let expected = self.plan.read_request().map_or(0, |(_, len)| len);
        match read {
            Some(bytes) if bytes.len() == expected => Ok(finish(call, &self.stop.regs, self.stop.tid, &self.plan, bytes)),
            _ => Err(self.stop),
        }
    }
}

/// Records the plan's accesses and returns the actions that carry it out. `read` is what
/// [`EmulationPlan::read_request`] read; a copy's bytes move on into the write unchanged.
fn finish(call: &mut Call, regs: &Registers, tid: i32, plan: &EmulationPlan, read: Vec<u8>) -> Vec<Action> {
    call.record_run(plan.accesses());
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
