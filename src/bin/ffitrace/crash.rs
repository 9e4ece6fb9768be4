//! The supervisor's report when the call does not return: a crash, a death or a protocol
//! failure. This code runs in the supervisor while the traced process is stopped or gone.

use ffitrace::{CallTrace, Crash, ExitStatus, ProcessView, Report, ReportHandler};

use crate::buffers::Buffer;
use crate::output::{self, Findings, Style};
use crate::signals;

/// Builds the report handler for `ffitrace::init`. The buffers were allocated before the
/// fork, so their addresses are the same in the supervisor and in the traced process.
pub fn handler(buffers: Vec<Buffer>, style: Style, page_size: u64) -> ReportHandler {
    Box::new(move |report, view| on_report(report, view, &buffers, style, page_size))
}

fn on_report(report: &Report, view: &ProcessView, buffers: &[Buffer], style: Style, page_size: u64) {
    match report {
        Report::Crash(crash) => {
            tell!("{}", describe_crash(crash, view, buffers, page_size));
            tell!("{}", describe_registers(&crash.regs));
            print_trace(crash.trace.as_ref(), view, buffers, style);
        }
        Report::DiedDuringCall { status, trace, .. } => {
            let ending = match status {
                ExitStatus::Exited(code) => format!("exited with status {code}"),
                ExitStatus::Killed { signal, .. } => format!("was killed by {}", signals::name(*signal)),
            };
            tell!("ffitrace: the process {ending} before the call returned; {}", traced_count(trace));
            print_trace(Some(trace), view, buffers, style);
            // The call did not complete, so success must not be reported.
            if status.shell_code() == 0 {
                std::process::exit(1);
            }
        }
        Report::ProtocolError { message, trace } => {
            let count = trace.as_ref().map_or_else(|| "nothing was traced".to_string(), traced_count);
            tell!("ffitrace: tracing broke down and the process is killed: {message}; {count}");
            print_trace(trace.as_ref(), view, buffers, style);
        }
    }
}

fn traced_count(trace: &CallTrace) -> String {
    let count = trace.accesses.len();
    let plural = if count == 1 { "access was" } else { "accesses were" };
    format!("{count} {plural} traced before that (listed on stdout)")
}

/// Distance from the stack pointer within which a faulting address is taken to be on the
/// stack: one large stack frame.
const STACK_REACH: u64 = 64 * 1024;

/// Writes one paragraph: the signal and its cause, the address, the instruction and where it lives,
/// the buffer nearest the address, and how much was traced.
fn describe_crash(crash: &Crash, view: &ProcessView, buffers: &[Buffer], page_size: u64) -> String {
    let info = &crash.info;
    let when = match (&crash.trace, buffers.is_empty()) {
        (Some(_), _) => "during the traced call",
        (None, true) => "during a call with no buffers, so untraced,",
        (None, false) => "outside the traced call",
    };
    let mut text = format!(
        "ffitrace: the process got {} ({}) {when}",
        signals::name(info.signo),
        signals::code_meaning(info.signo, info.code)
    );
    if signals::has_data_address(info.signo, info.code) {
        text += &format!(" at address {:#x}", info.addr);
        if info.addr.abs_diff(crash.regs.rsp) < STACK_REACH {
            text += ", next to the stack pointer: a stack overflow, if the stack's guard page was hit";
        } else if !buffers.is_empty() {
            text += &format!(", {}", near_buffer(info.addr, buffers, page_size));
        }
    }
    let rip = crash.regs.rip;
    // The core leaves the instruction out where the thread stopped in a system-call
    // trampoline rather than the program's code. The stopped program's memory still has it.
    let instruction = crash.instruction.clone().or_else(|| {
        let code = read_code(view.pid, rip)?;
        ffitrace::decode::disassemble_x86_64(&code, rip)
    });
    match instruction {
        Some(instruction) => text += &format!("; the instruction was `{instruction}` at {rip:#x}"),
        None => text += &format!("; the instruction at {rip:#x} could not be decoded"),
    }
    if let Some(place) = code_place(view.pid, rip) {
        text += &format!(" ({place})");
    }
    match &crash.trace {
        Some(trace) => text += &format!(". {}.", traced_count(trace)),
        None => text.push('.'),
    }
    text
}

/// Says where `addr` lies relative to the nearest buffer.
/// Formats the general-purpose registers at the crash, four to a line.
fn describe_registers(regs: &ffitrace::regs::Registers) -> String {
    let values = [
        ("rax", regs.rax), ("rbx", regs.rbx), ("rcx", regs.rcx), ("rdx", regs.rdx),
        ("rsi", regs.rsi), ("rdi", regs.rdi), ("rbp", regs.rbp), ("rsp", regs.rsp),
        ("r8", regs.r8), ("r9", regs.r9), ("r10", regs.r10), ("r11", regs.r11),
        ("r12", regs.r12), ("r13", regs.r13), ("r14", regs.r14), ("r15", regs.r15),
        ("rip", regs.rip), ("eflags", regs.eflags), ("fs_base", regs.fs_base), ("gs_base", regs.gs_base),
    ];
    let lines: Vec<String> = values
        .chunks(4)
        .map(|row| row.iter().map(|(name, value)| format!("{name:>7}={value:#018x}")).collect::<Vec<_>>().join(" "))
        .collect();
    format!("registers at the fault:\n{}", lines.join("\n"))
}

fn near_buffer(addr: u64, buffers: &[Buffer], page_size: u64) -> String {
    if addr < page_size {
        return "a null pointer (the first page is never mapped)".to_string();
    }
    let distance = |buffer: &&Buffer| {
        let end = buffer.addr + buffer.size;
        if addr < buffer.addr {
            buffer.addr - addr
        } else {
            addr.saturating_sub(end)
        }
    };
    let Some((index, buffer)) = buffers.iter().enumerate().min_by_key(|(_, buffer)| distance(buffer)) else {
        return "and there are no buffers".to_string();
    };
    let end = buffer.addr + buffer.size;
    let relation = if addr < buffer.addr {
        format!("{} before the start of buffer {index}", output::byte_count(buffer.addr - addr))
    } else if addr >= end {
        format!("{} past the end of buffer {index}", output::byte_count(addr - end))
    } else {
        format!("inside buffer {index} at offset {}", addr - buffer.addr)
    };
    let guard = addr < buffer.pages.start && buffer.pages.start - addr <= page_size
        || addr >= buffer.pages.end() && addr - buffer.pages.end() < page_size;
    let guard = if guard { ", on the inaccessible guard page beside its pages" } else { "" };
    format!("{relation} ({} at {:#x}){guard}", output::byte_count(buffer.size), buffer.addr)
}

/// Names the module holding `rip` and the offset in its file, plus the function when the
/// module's symbol tables know it.
fn code_place(pid: i32, rip: u64) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let (path, offset) = module_at(&maps, rip)?;
    let function = std::fs::read(&path).ok().and_then(|image| crate::elf::function_at(&image, offset));
    Some(match function {
        Some((name, delta)) => format!("{path}+{offset:#x}, in {name}+{delta:#x}"),
        None => format!("{path}+{offset:#x}"),
    })
}

/// Finds the file mapped at `addr` in the text of a `/proc/PID/maps` file and returns its
/// path and the file offset that `addr` corresponds to.
pub fn module_at(maps: &str, addr: u64) -> Option<(String, u64)> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
        let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
        let path = fields.skip(2).collect::<Vec<_>>().join(" ");
        (start <= addr && addr < end && !path.is_empty()).then(|| (path, addr - start + offset))
    })
}

/// Prints what was traced before the call ended, with the buffers as they are now.
fn print_trace(trace: Option<&CallTrace>, view: &ProcessView, buffers: &[Buffer], style: Style) {
    let Some(trace) = trace else { return };
    output::warn_unsupported(&trace.unsupported);
    output::warn_system_calls(&trace.system_calls);
    let contents = buffers.iter().map(|buffer| view.read_memory(buffer.addr, buffer.size as usize)).collect();
    let findings = Findings { buffers, accesses: &trace.accesses, contents, returned: None };
    match output::print(&mut output::report_writer(), style, &findings) {
        // The reader closed the pipe: it has all it wants.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(error) => tracing::warn!(%error, "could not print the trace"),
        Ok(()) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffitrace::PageRange;

    #[test]
    fn module_and_file_offset_from_maps() {
        let maps = "7f0000000000-7f0000001000 r--p 00000000 08:01 42   /usr/lib/libx.so\n\
                    7f0000001000-7f0000003000 r-xp 00001000 08:01 42   /usr/lib/libx.so\n\
                    7f0000003000-7f0000004000 rw-p 00000000 00:00 0 \n";
        assert_eq!(module_at(maps, 0x7f0000001234), Some(("/usr/lib/libx.so".to_string(), 0x1234)));
        assert_eq!(module_at(maps, 0x7f0000003010), None);
        assert_eq!(module_at(maps, 0x10), None);
    }

    #[test]
    fn fault_address_relative_to_buffers() {
        let pages = |start| PageRange { start, len: 0x1000 };
        let buffers = [
            Buffer { addr: 0x10000, size: 16, pages: pages(0x10000) },
            Buffer { addr: 0x20ff0, size: 16, pages: pages(0x20000) },
        ];
        assert_eq!(near_buffer(0x8, &buffers, 0x1000), "a null pointer (the first page is never mapped)");
        assert_eq!(near_buffer(0x10004, &buffers, 0x1000), "inside buffer 0 at offset 4 (16 bytes at 0x10000)");
        assert_eq!(
            near_buffer(0x21004, &buffers, 0x1000),
            "4 bytes past the end of buffer 1 (16 bytes at 0x20ff0), on the inaccessible guard page beside its pages"
        );
        assert_eq!(
            near_buffer(0x18000, &buffers, 0x1000),
            "32752 bytes past the end of buffer 0 (16 bytes at 0x10000)"
        );
        assert_eq!(near_buffer(0x5000, &[], 0x1000), "and there are no buffers");
    }
}

/// Reads up to 15 instruction bytes at `rip` from the stopped process.
fn read_code(pid: i32, rip: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut code = vec![0u8; 15];
    let read = file.read_at(&mut code, rip).ok()?;
    code.truncate(read);
    (!code.is_empty()).then_some(code)
}
