//! What the guest says on its serial console, and how the host reads it back.
//!
//! The guest has no disk and no network: virtio-blk and 9p are modules in Debian's cloud
//! kernels, and the initramfs carries no modules. Results come back over the PL011 console
//! instead, base64-framed between marker lines, so a report survives the tty's CRLF.
use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;

const FILE: &str = "@@gcprobe:file ";
const END: &str = "@@gcprobe:end";
const STATUS: &str = "@@gcprobe:status ";

/// `/init`: mounts what gcprobe reads (proc, sysfs, tracefs, bpffs, cgroup2), runs `script`
/// with `send PATH NAME` to hand a file back, reports the script's status and powers off.
pub fn init_script(script: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
send() {{
  if [ -r "$1" ]; then
    echo "{FILE}$2"
    base64 "$1"
    echo "{END}"
  else
    echo "send: there is no $1 to send"
  fi
}}
cd /work
(
{script}
)
echo "{STATUS}$?"
poweroff -f
"#
    )
}

/// What came back: the files the script sent, its exit status, everything else it printed.
#[derive(Debug, Default)]
pub struct Transcript {
    pub files: BTreeMap<String, Vec<u8>>,
    pub status: Option<i32>,
    pub text: String,
}

impl Transcript {
    /// Reads a whole console log.
    pub fn parse(console: &str) -> Result<Transcript> {
        let mut t = Transcript::default();
        let mut open: Option<(String, String)> = None;
        for line in console.lines().map(|l| l.trim_end_matches('\r')) {
            if let Some((name, body)) = open.as_mut() {
                if line == END {
                    let data = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).with_context(|| format!("file {name} from the guest is not base64"))?;
                    t.files.insert(std::mem::take(name), data);
                    open = None;
                } else {
                    body.push_str(line.trim());
                }
            } else if let Some(name) = line.strip_prefix(FILE) {
                open = Some((name.to_owned(), String::new()));
            } else if let Some(s) = line.strip_prefix(STATUS) {
                t.status = Some(s.trim().parse().with_context(|| format!("bad status line {line:?}"))?);
            } else {
                t.text.push_str(line);
                t.text.push('\n');
            }
        }
        if let Some((name, _)) = open {
            bail!("the guest stopped in the middle of sending {name}");
        }
        Ok(t)
    }
}

/// Quotes one argument for the guest's shell.
pub fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_status_are_read_back_through_crlf_and_around_other_output() {
        let console = "boot noise\r\n@@gcprobe:file report.json\r\neyJhIjox\r\nfQ==\r\n@@gcprobe:end\r\nprogram said hi\r\n@@gcprobe:status 10\r\n";
        let t = Transcript::parse(console).unwrap();
        assert_eq!(t.files["report.json"], br#"{"a":1}"#);
        assert_eq!(t.status, Some(10));
        assert_eq!(t.text, "boot noise\nprogram said hi\n");
    }

    #[test]
    fn a_file_cut_off_by_the_end_of_the_log_is_an_error() {
        let err = Transcript::parse("@@gcprobe:file r.json\neyJh\n").unwrap_err();
        assert_eq!(err.to_string(), "the guest stopped in the middle of sending r.json");
    }

    #[test]
    fn arguments_are_single_quoted_for_the_guest_shell() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a b"), "'a b'");
    }
}
