//! What gcprobe learns of a target before touching the kernel: its process,
//! its executable's build and probe plan (`gcprobe plan` prints them), and
//! whether the plan's GC controller holds up against the target's memory.
use std::{io, path::{Path, PathBuf}};

use super::{NotGoReason, SessionError};
use crate::{
    plan::ProbePlan,
    tracee::{
        binary::{Binary, BinaryError},
        buildinfo,
        memory::TargetMemory,
        pclntab::Pclntab,
        process::{Process, ProcessError},
        symbols::Symbols,
    },
};

/// Everything learned about the target before touching the kernel.
pub struct Inspected {
    pub process: Process,
    pub exe: ExeInfo,
}

/// What `inspect_exe` learns from a file.
pub struct ExeInfo {
    pub binary: std::rc::Rc<Binary>,
    pub build: buildinfo::BuildInfo,
    pub pclntab: Option<Pclntab>,
    pub plan: ProbePlan,
}

pub fn inspect(pid: u32) -> Result<Inspected, SessionError> {
    let process = Process::open(pid)?;
    let exe = inspect_exe(&process.exe_path, &process.exe_display).map_err(|e| match e {
        SessionError::Binary(BinaryError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            SessionError::Process(ProcessError::Exited { pid })
        }
        other => other,
    })?;
    Ok(Inspected { process, exe })
}

/// ELF, build info and probe plan of an executable; `display` names it in errors.
pub fn inspect_exe(path: &Path, display: &str) -> Result<ExeInfo, SessionError> {
    let binary = Binary::open(path)?;
    let build = buildinfo::parse(binary.section_data(".go.buildinfo"), binary.data())
        .map_err(|source| SessionError::NotGo { path: display.to_owned(), source: NotGoReason::BuildInfo(source) })?;
    let pclntab = Pclntab::parse(&binary, build.version).map_err(|source| SessionError::Pclntab { path: display.to_owned(), source })?;
    let plan = ProbePlan::build(&Symbols { bin: &binary, pclntab: pclntab.as_ref() }, build.version)?;
    Ok(ExeInfo { binary: std::rc::Rc::new(binary), build, pclntab, plan })
}

/// `gcprobe plan`: what would be probed, and where.
pub fn print_plan(pid: Option<u32>, exe: Option<PathBuf>) -> Result<(), SessionError> {
    let ExeInfo { binary, build, pclntab, plan } = match (pid, exe) {
        (Some(pid), _) => inspect(pid)?.exe,
        (None, Some(exe)) => inspect_exe(&exe, &exe.display().to_string())?,
        (None, None) => unreachable!("clap requires --pid or --exe"),
    };
    println!(
        "{} {} {} pie={} dwarf={} symtab={} gopclntab={}",
        binary.path.display(),
        build.version_raw,
        binary.arch.go_name(),
        binary.is_pie,
        binary.has_dwarf,
        binary.symbols().next().is_some(),
        match &pclntab {
            Some(t) => format!("{} functions, text {:#x}, inline tree {}", t.len(), t.text_start, if t.has_inline_tree() { "yes" } else { "no" }),
            None => "absent".into(),
        }
    );
    if let Some((m, v)) = &build.main_module {
        println!("main module {m} {v}");
    }
    if let Some(pid) = pid {
        // Who it is, as node mode labels it (no API credentials: its cgroup
        // and the kubelet's log layout).
        match crate::tracee::labels::Labels::of_process(pid, &Default::default()) {
            Ok(l) => println!("labels: {l}"),
            Err(e) => println!("labels: unavailable: {}", crate::error::error_chain(&e)),
        }
    }
    println!("growslice ABI {:?}; stopTheWorld reason argument: {}; startTheWorld worldStop argument: {}", plan.growslice_abi, plan.stw_reason_arg, plan.stw_span_arg);
    let sites = plan.probes.iter().filter(|p| p.kind == crate::plan::ProbeKind::StwResumed).count();
    println!("stop-the-world pauses end at {} ({sites} return sites of runtime.startTheWorldWithSema)", plan.pause_end.name());
    for line in gc_controller_lines(&plan.gc_controller) {
        println!("{line}");
    }
    match plan.mem_profile_rate {
        Some(a) => println!("runtime.MemProfileRate at {a:#x}: the runtime's own samples weighted at the program's rate"),
        None => println!("runtime.MemProfileRate not found: runtime samples would be weighted for the default 512 KiB"),
    }
    for p in &plan.probes {
        let past = if p.past_entry > 0 { format!(" +{:#x} past its stack check", p.past_entry) } else { String::new() };
        println!("  probe {:<40} {:<14} vaddr {:#x}{past} file offset {:#x}{}", p.symbol, format!("{:?}", p.kind), p.vaddr, p.file_offset, if p.required { "" } else { " (optional)" });
    }
    for s in plan.skipped.iter().chain(&plan.not_needed) {
        println!("  skip  {:<40} {}", s.symbol, s.reason);
    }
    for w in &plan.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

/// What `gcprobe plan` says of the GC controller and its CPU counters.
fn gc_controller_lines(located: &crate::tracee::gcctl::Located) -> Vec<String> {
    use crate::tracee::gcctl::{AddressSource, LayoutSource, Located};
    let c = match located {
        Located::Unavailable { reason } => return vec![format!("runtime.gcController unavailable: {reason}")],
        Located::Found(c) => c,
    };
    let from = match c.address_from {
        AddressSource::Symbol => "the symbol table".to_owned(),
        AddressSource::MachineCode { calls } => format!("machine code, {calls} calls agreeing"),
    };
    let layout = match c.layout_from {
        LayoutSource::Dwarf => "DWARF",
        LayoutSource::Table => "gcprobe's table for this Go version",
    };
    vec![
        format!("runtime.gcController at {:#x} (address from {from}, layout from {layout}): heap, goal, GOGC, memory limit and allocation total readable", c.addr),
        match &c.cpu_stats {
            Ok(a) => format!("runtime.work.cpuStats at {a:#x} (machine code): GC CPU share readable"),
            Err(reason) => format!("GC CPU share unavailable: {reason}"),
        },
    ]
}

/// Holds the plan's GC controller against the target's memory: a wrong
/// address or layout shows as fields that contradict each other, and then
/// nothing is read from it (the kernel included), with the reason reported.
pub(super) fn check_gc_controller(plan: &mut ProbePlan, bias: u64, mem: Option<&TargetMemory>) {
    use crate::tracee::gcctl::{Check, Located};
    let Some(c) = plan.gc_controller.found() else { return };
    let read = || mem.map(|m| c.settings(bias, |a| m.read_u64(a)));
    let mut settings = read();
    // A process caught as it starts may be inside gcController.init, which
    // sets heapMinimum before GOGC (runtime/mgcpacer.go): read again shortly
    // before calling the values inconsistent (node mode met it 3 times in
    // 1,637 starts).
    for _ in 0..3 {
        if !matches!(&settings, Some(Some(s)) if s.check() == Check::Inconsistent) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        settings = read();
    }
    let reason = match settings {
        None => "the target's memory cannot be read (/proc/PID/mem)".to_owned(),
        Some(None) => format!("runtime.gcController at {:#x} cannot be read", c.addr),
        Some(Some(s)) if s.check() == Check::Inconsistent => {
            format!("runtime.gcController at {:#x} holds inconsistent values (GOGC {}, minimum heap {}): not trusted", c.addr, s.gc_percent, s.heap_minimum)
        }
        Some(Some(_)) => return,
    };
    eprintln!("gcprobe: warning: GC heap figures unavailable: {reason}");
    plan.gc_controller = Located::Unavailable { reason };
}

