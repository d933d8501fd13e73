//! `gcprobe plan --exe` on arm64 builds, read on whatever host runs the
//! tests: the arch, the growslice ABI and probe addresses that agree with
//! the ELF's own headers and symbols, for default, stripped and PIE builds.
//! No root: nothing is attached.
use object::{
    elf,
    read::elf::{FileHeader as _, ProgramHeader as _},
    Object as _, ObjectSymbol as _,
};

use gcprobe_tests::{fixtures::{self, GoArch}, pins, *};

/// The functions whose entries `plan` probes in Go `version`: the world's
/// stop before Go 1.22 (the restart's return sites end each pause), its
/// restart from 1.22 (which receives the stop's start).
fn probed(version: &str) -> [&'static str; 3] {
    let pause = if minor(version) < 22 { "runtime.stopTheWorldWithSema" } else { "runtime.startTheWorldWithSema" };
    ["runtime.mallocgc", "runtime.growslice", pause]
}

fn minor(version: &str) -> u32 {
    version.split('.').nth(1).unwrap().parse().unwrap()
}

/// `MOVD 16(R28), R16`: every Go function that may grow its stack starts by
/// loading g.stackguard0, so each probed function's entry holds this word.
const STACK_CHECK: u32 = 0xf9400b90;

/// `BLS` (B.cond, LS): the stack check's branch to runtime.morestack. The
/// probe sits on the instruction after it, so that a call whose prologue
/// grows the stack, and runs again from the entry, fires it once.
fn is_bls(word: u32) -> bool {
    word & 0xff00_001f == 0x5400_0009
}

/// The growslice ABI line `plan` prints for Go `version`.
fn abi_line(version: &str) -> &'static str {
    match version {
        "1.19" => "growslice ABI Go119; stopTheWorld reason argument: false; startTheWorld worldStop argument: false",
        "1.21.13" => "growslice ABI Go120; stopTheWorld reason argument: true; startTheWorld worldStop argument: false",
        _ => "growslice ABI Go120; stopTheWorld reason argument: true; startTheWorld worldStop argument: true",
    }
}

fn plan(exe: &std::path::Path) -> String {
    let out = gcprobe(&["plan", "--exe", exe.to_str().unwrap()]);
    assert!(out.status.success(), "plan --exe {}: {}", exe.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The executable PT_LOAD: (vaddr, file offset, file size, alignment).
fn text_load(data: &[u8]) -> (u64, u64, u64, u64) {
    let f = elf::FileHeader64::<object::LittleEndian>::parse(data).unwrap();
    let e = f.endian().unwrap();
    let mut text = f.program_headers(e, data).unwrap().iter().filter(|p| p.p_type(e) == elf::PT_LOAD && p.p_flags(e).0 & elf::PF_X.0 != 0);
    let p = text.next().expect("an executable PT_LOAD");
    assert!(text.next().is_none(), "one executable PT_LOAD");
    (p.p_vaddr(e), p.p_offset(e), p.p_filesz(e), p.p_align(e))
}

#[test]
fn plan_of_arm64_builds_agrees_with_their_elf_headers() {
    let mut failures = Vec::new();
    for version in [pins::GO_DEBIAN, pins::GO_PYPI[0], *pins::GO_PYPI.last().unwrap()] {
        // Addresses from the unstripped build's symbol table: -s -w drops
        // the table but leaves the text where it was.
        let default = fixtures::build_for("loopkinds", version, Flavor::Default, GoArch::Arm64).unwrap();
        let data = std::fs::read(&default).unwrap();
        let syms = object::File::parse(&*data).unwrap();
        let addr_of = |name: &str| syms.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address());
        for flavor in [Flavor::Default, Flavor::Stripped, Flavor::Pie] {
            let exe = fixtures::build_for("loopkinds", version, flavor, GoArch::Arm64).unwrap();
            let at = format!("Go {version} {}", flavor.name());
            let out = plan(&exe);
            let head = out.lines().next().unwrap_or_default();
            let has_tables = flavor != Flavor::Stripped;
            let want = format!(" arm64 pie={} dwarf={has_tables} symtab={has_tables} gopclntab=", flavor == Flavor::Pie);
            if !head.starts_with(&format!("{} go{version}", exe.display())) || !head.contains(&want) || head.contains("gopclntab=absent") {
                failures.push(format!("{at}: header {head:?}, want go{version} and {want:?} with a .gopclntab"));
            }
            if !out.lines().any(|l| l == abi_line(version)) {
                failures.push(format!("{at}: no line {:?} in\n{out}", abi_line(version)));
            }
            let data = std::fs::read(&exe).unwrap();
            let (load_vaddr, load_offset, load_size, align) = text_load(&data);
            // Go's arm64 linker starts text at 64 KiB, PIE or not; amd64's at 4 MiB.
            if (load_vaddr, load_offset, align) != (0x10000, 0, 0x10000) {
                failures.push(format!("{at}: text PT_LOAD at {load_vaddr:#x}, offset {load_offset:#x}, align {align:#x}"));
            }
            let own = object::File::parse(&*data).unwrap();
            for sym in probed(version) {
                let Some(PlannedAt { vaddr, past_entry: past, file_offset: off }) = planned_at(&out, sym) else {
                    failures.push(format!("{at}: no probe on {sym} in\n{out}"));
                    continue;
                };
                let want_vaddr = match flavor {
                    Flavor::Stripped => addr_of(sym),
                    _ => own.symbols().find(|s| s.name() == Ok(sym)).map(|s| s.address()),
                };
                let word = |at: u64| data.get(at as usize..at as usize + 4).map(|w| u32::from_le_bytes(w.try_into().unwrap()));
                let entry = vaddr - load_vaddr + load_offset;
                let (first, before) = (word(entry), off.checked_sub(4).and_then(word));
                if Some(vaddr) != want_vaddr || off != entry + past || off + 4 > load_offset + load_size || first != Some(STACK_CHECK) || !before.is_some_and(is_bls) {
                    failures.push(format!("{at} {sym}: vaddr {vaddr:#x} (symbol {want_vaddr:x?}), file offset {off:#x} ({past:#x} past the entry), first word {first:x?}, word before the probe {before:x?}"));
                }
            }
        }
        // The amd64 build of the same source reads growslice's arguments the same way.
        let amd64 = plan(&fixtures::build_for("loopkinds", version, Flavor::Default, GoArch::Amd64).unwrap());
        if !amd64.lines().any(|l| l == abi_line(version)) {
            failures.push(format!("Go {version} amd64: no line {:?}", abi_line(version)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The probes `plan` places after each call of startTheWorldWithSema:
/// (caller, vaddr, file offset, required).
fn return_sites(plan: &str) -> Vec<(String, u64, u64, bool)> {
    plan.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("probe")).then_some(())?;
            let (symbol, kind) = (w.next()?, w.next()?);
            (kind == "StwResumed").then_some(())?;
            let hex = |key: &str| u64::from_str_radix(l.split(key).nth(1)?.split_whitespace().next()?.strip_prefix("0x")?, 16).ok();
            Some((symbol.split('+').next()?.to_owned(), hex(" vaddr ")?, hex(" file offset ")?, !l.ends_with("(optional)")))
        })
        .collect()
}

/// Where pauses end is found in the machine code: on either arch and with
/// or without a symbol table, every return site of startTheWorldWithSema
/// follows a call of it (a `BL` on arm64, 4-byte aligned; a `CALL rel32` on
/// amd64), and its callers are the runtime's four, Go 1.19 to 1.27.
#[test]
fn return_sites_follow_each_call_of_start_the_world() {
    let mut failures = Vec::new();
    for version in [pins::GO_DEBIAN, "1.22.10", "1.27.3"] {
        for arch in [GoArch::Arm64, GoArch::Amd64] {
            let default = std::fs::read(fixtures::build_for("loopkinds", version, Flavor::Default, arch).unwrap()).unwrap();
            let syms = object::File::parse(&*default).unwrap();
            let start = syms.symbols().find(|s| s.name() == Ok("runtime.startTheWorldWithSema")).map(|s| s.address()).expect("startTheWorldWithSema");
            for flavor in [Flavor::Default, Flavor::Stripped] {
                let exe = fixtures::build_for("loopkinds", version, flavor, arch).unwrap();
                let at = format!("Go {version} {} {}", arch.name(), flavor.name());
                let out = plan(&exe);
                if !out.lines().any(|l| l == "stop-the-world pauses end at restart-return (4 return sites of runtime.startTheWorldWithSema)") {
                    failures.push(format!("{at}: pauses do not end at 4 return sites:\n{out}"));
                }
                let data = std::fs::read(&exe).unwrap();
                let (load_vaddr, load_offset, _, _) = text_load(&data);
                let sites = return_sites(&out);
                let mut callers: Vec<&str> = sites.iter().map(|s| s.0.trim_end_matches(|c: char| c.is_ascii_digit())).collect();
                callers.sort_unstable();
                if callers != ["runtime.gcMarkDone.func", "runtime.gcMarkTermination.func", "runtime.gcStart.func", "runtime.startTheWorld.func"] {
                    failures.push(format!("{at}: return sites in {callers:?}"));
                }
                for (caller, vaddr, off, required) in sites {
                    // Go 1.22+ also probes the entry, and falls back to it.
                    let call = match arch {
                        GoArch::Arm64 => data.get(off as usize - 4..off as usize).map(|w| u32::from_le_bytes(w.try_into().unwrap())).filter(|w| w & 0xfc00_0000 == 0x9400_0000).map(|w| {
                            let imm = (((w & 0x03ff_ffff) << 6) as i32 >> 4) as i64;
                            (vaddr - 4).wrapping_add(imm as u64)
                        }),
                        GoArch::Amd64 => data.get(off as usize - 5..off as usize).filter(|b| b[0] == 0xe8).map(|b| vaddr.wrapping_add(i32::from_le_bytes(b[1..].try_into().unwrap()) as i64 as u64)),
                    };
                    let aligned = arch == GoArch::Amd64 || vaddr % 4 == 0;
                    if call != Some(start) || !aligned || off != vaddr - load_vaddr + load_offset || required != (minor(version) < 22) {
                        failures.push(format!("{at}: site {vaddr:#x} (file offset {off:#x}) in {caller}: the call before it goes to {call:x?}, not {start:#x}; required {required}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
