//! The far side's commands: POSIX `sh` scripts run on exec channels, using
//! only `dd` (with `bs`/`skip`/`seek` in whole ranges), `sha256sum` (or
//! `shasum -a 256`), `wc`, `find`, `mkdir`, `chmod` and `mv`. Every operand
//! is single-quoted; nothing here runs a command itself.

use crate::cmd::connect::shell_quote;

/// `h` hashes its stdin and prints the hex digest first.
const HASH_FN: &str = "h() { if command -v sha256sum >/dev/null 2>&1; then sha256sum; \
elif command -v shasum >/dev/null 2>&1; then shasum -a 256; \
else echo 'neither sha256sum nor shasum is installed' >&2; return 127; fi; }";

/// `m FILE` prints FILE's modification time in seconds and its permission
/// bits in octal (GNU, then BSD stat; a symbolic link's target), or `0 644`.
const MTIME_FN: &str = "m() { stat -L -c '%Y %a' -- \"$1\" 2>/dev/null || \
stat -L -f '%m %Lp' -- \"$1\" 2>/dev/null || echo 0 644; }";

/// What a path is on the far side: `d`, `f SIZE MTIME MODE`, `o` (another
/// kind) or `n` (nothing), symbolic links followed. An unreadable file fails
/// with the shell's own message.
pub fn probe(path: &str) -> String {
    let p = shell_quote(path);
    format!(
        "{MTIME_FN}; p={p}; if [ -d \"$p\" ]; then echo d; \
         elif [ -f \"$p\" ]; then s=$(wc -c < \"$p\") || exit 1; echo \"f $s $(m \"$p\")\"; \
         elif [ -e \"$p\" ]; then echo o; else echo n; fi"
    )
}

/// Lists the tree under `dir`: its directories (`d PATH`), then its regular
/// files (`f SIZE MTIME MODE PATH`), paths relative to `dir` starting with
/// `./`. Symbolic links are followed (`find -L`, as scp does); a dangling one
/// is neither and is left out, a loop fails with find's message.
pub fn list_tree(dir: &str) -> String {
    format!(
        "cd -- {} || exit 1; find -L . -type d -exec sh -c 'for d; do echo \"d $d\"; done' sh {{}} + \
         && find -L . -type f -exec sh -c '{}; for f; do s=$(wc -c < \"$f\") || exit 1; \
         echo \"f $s $(m \"$f\") $f\"; done' sh {{}} +",
        shell_quote(dir),
        MTIME_FN.replace('\'', "'\\''"),
    )
}

/// Creates directories (and their parents).
pub fn mkdirs<'a>(dirs: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = dirs.into_iter().map(shell_quote).collect();
    format!("mkdir -p -- {}", quoted.join(" "))
}

/// Writes stdin as range `index` (of `range_size` bytes) of `part`, then
/// prints the SHA-256 of what landed there. With `size`, this is the last
/// range, and the part is cut to `size` bytes after it (so that nothing of
/// an earlier, longer part is left past the end).
pub fn write_range(part: &str, range_size: u64, index: u64, size: Option<u64>) -> String {
    let p = shell_quote(part);
    let cut = size
        .map(|size| format!("dd if=/dev/null of={p} bs=1 seek={size} 2>/dev/null || exit 1; "))
        .unwrap_or_default();
    format!(
        "{HASH_FN}; dd of={p} bs={range_size} seek={index} conv=notrunc || exit 1; {cut}\
         dd if={p} bs={range_size} skip={index} count=1 2>/dev/null | h"
    )
}

/// Prints range `index` of `path`, then the SHA-256 of that range as the
/// last line of stderr: one command per range, not one for the bytes and
/// one for the hash, since each command costs a shell start on the far side
/// (the second read comes from the page cache).
pub fn read_range(path: &str, range_size: u64, index: u64) -> String {
    let p = shell_quote(path);
    format!(
        "{HASH_FN}; dd if={p} bs={range_size} skip={index} count=1 || exit 1; \
         dd if={p} bs={range_size} skip={index} count=1 2>/dev/null | h >&2"
    )
}

/// Serves ranges for as long as its stdin stays open, so that a session
/// pays for one shell start on the far side, not one a range (a login
/// shell's rc files can take a tenth of a second of CPU: `conda init`,
/// `pyenv init`). Each request is two lines, `INDEX RANGE_SIZE FILE_SIZE`
/// and the path; the answer is the range's bytes, then its SHA-256 on a
/// line. It ends, answering nothing more, when the file is no longer
/// `FILE_SIZE` bytes (so that the answer's length is always the one
/// asked for) or a read fails; the caller then falls back to
/// [`read_range`], which reports why.
pub fn range_server() -> String {
    format!(
        "{HASH_FN}; while read -r k r s && IFS= read -r p; do \
         [ $(wc -c < \"$p\") -eq \"$s\" ] 2>/dev/null || exit 1; \
         dd if=\"$p\" bs=\"$r\" skip=\"$k\" count=1 2>/dev/null || exit 1; \
         dd if=\"$p\" bs=\"$r\" skip=\"$k\" count=1 2>/dev/null | h || exit 1; done"
    )
}

/// A request to [`range_server`], or `None` for a path it cannot be sent
/// (one with a newline in it).
pub fn range_request(path: &str, range_size: u64, size: u64, index: u64) -> Option<Vec<u8>> {
    (!path.contains('\n')).then(|| format!("{index} {range_size} {size}\n{path}\n").into_bytes())
}

/// Prints the SHA-256 of each range of `path` in `indexes`, one a line.
pub fn hash_ranges(path: &str, range_size: u64, indexes: &[u64]) -> String {
    let list: Vec<String> = indexes.iter().map(u64::to_string).collect();
    format!(
        "{HASH_FN}; for k in {}; do dd if={} bs={range_size} skip=$k count=1 2>/dev/null | h || exit 1; done",
        list.join(" "),
        shell_quote(path)
    )
}

/// Prints the SHA-256 of the whole of `path`.
pub fn hash_file(path: &str) -> String {
    format!("{HASH_FN}; h < {}", shell_quote(path))
}

/// Cuts (or extends) `part` to `size` bytes, gives it `mode`, and prints its SHA-256.
pub fn seal(part: &str, size: u64, mode: u32) -> String {
    let p = shell_quote(part);
    format!("{HASH_FN}; dd if=/dev/null of={p} bs=1 seek={size} || exit 1; chmod {mode:o} {p} && h < {p}")
}

/// Follows `part` as its ranges are done, and then moves it into place, so
/// that an upload's seal costs no shell start of its own. It reads range
/// indexes from stdin, one a line, hashing those ranges of `part` in the
/// order given; on the line `end` it prints their SHA-256. Then, on the line
/// `seal`, it runs [`rename`] and prints `sealed`; any other line, or the
/// input's end, leaves the part where it is.
pub fn follow_ranges(part: &str, range_size: u64, dest: &str, size: u64, mode: u32) -> String {
    format!(
        "{HASH_FN}; while read -r k && [ \"$k\" != end ]; do \
         dd if={} bs={range_size} skip=$k count=1 2>/dev/null || exit 1; done | h; \
         read -r v && [ \"$v\" = seal ] && {} && echo sealed",
        shell_quote(part),
        rename(part, dest, size, mode)
    )
}

/// Cuts `part` to `size` bytes (it is that long already when its hashes
/// agreed; this keeps it so), gives it `mode` and moves it over `dest`. A
/// part that is gone (moved already, or removed) fails it: `dd` would
/// otherwise make one of zeros and move that over `dest`.
pub fn rename(part: &str, dest: &str, size: u64, mode: u32) -> String {
    let p = shell_quote(part);
    format!(
        "{{ [ -f {p} ] || {{ echo 'the partial copy is gone' >&2; exit 1; }}; }} && \
         dd if=/dev/null of={p} bs=1 seek={size} 2>/dev/null && chmod {mode:o} {p} && mv -f -- {p} {}",
        shell_quote(dest)
    )
}

/// The digest at the start of `sha256sum`'s output, if it is one.
pub fn digest(output: &str) -> Option<String> {
    let word = output.split_whitespace().next()?;
    (word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}

/// The digest on the last line of a command's stderr (see [`read_range`]).
pub fn trailing_digest(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    digest(text.lines().rev().find(|l| !l.trim().is_empty())?)
}

/// The line of a failed command's stderr worth showing: `dd`'s own complaint
/// rather than its record counts.
pub fn complaint(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("records in") && !l.contains("records out"))
        .filter(|l| !l.contains("bytes") || l.contains(':'))
        .collect();
    lines
        .iter()
        .find(|l| l.contains(':'))
        .or(lines.first())
        .map(|l| (*l).to_owned())
        .unwrap_or_else(|| "the command failed without saying why".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, stdin: &[u8]) -> (i32, Vec<u8>, Vec<u8>) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
    }

    fn hex(data: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn the_range_server_answers_in_turn_and_stops_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(" it's \\ spaced ").display().to_string();
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut requests = Vec::new();
        for index in [2u64, 0] {
            requests.extend(range_request(&path, 1000, 2500, index).unwrap());
        }
        // The size asked for is no longer the file's: nothing more is answered.
        requests.extend(range_request(&path, 1000, 2600, 1).unwrap());
        requests.extend(range_request(&path, 1000, 2500, 1).unwrap());
        let (code, out, _) = sh(&range_server(), &requests);
        assert_eq!(code, 1);
        let (last, rest) = out.split_at(500);
        assert_eq!(last, &data[2000..]);
        let (line, rest) = rest.split_at(rest.iter().position(|&b| b == b'\n').unwrap() + 1);
        assert_eq!(
            digest(&String::from_utf8_lossy(line)),
            Some(hex(&data[2000..]))
        );
        let (first, rest) = rest.split_at(1000);
        assert_eq!(first, &data[..1000]);
        assert_eq!(
            digest(&String::from_utf8_lossy(rest)),
            Some(hex(&data[..1000]))
        );
        assert!(
            rest.ends_with(b"\n") && rest.len() < 100,
            "answered past the change"
        );
        assert_eq!(range_request("a\nb", 1000, 2500, 0), None);
    }

    #[test]
    fn ranges_written_out_of_order_reassemble_and_seal() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("it's a part").display().to_string();
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        // An earlier, longer part: the last range cuts what is past the end.
        std::fs::write(&part, vec![b'x'; 2700]).unwrap();
        for index in [2u64, 0, 1] {
            let range = &data[(index as usize * 1000)..((index as usize + 1) * 1000).min(2500)];
            let size = (index == 2).then_some(2500);
            let (code, out, err) = sh(&write_range(&part, 1000, index, size), range);
            assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
            assert_eq!(digest(&String::from_utf8_lossy(&out)), Some(hex(range)));
        }
        assert_eq!(std::fs::read(&part).unwrap(), data);
        let (code, out, _) = sh(&seal(&part, 2500, 0o640), b"");
        assert_eq!(code, 0);
        assert_eq!(digest(&String::from_utf8_lossy(&out)), Some(hex(&data)));
        let (code, out, err) = sh(&read_range(&part, 1000, 2), b"");
        assert_eq!(code, 0);
        assert_eq!(out, &data[2000..]);
        assert_eq!(trailing_digest(&err), Some(hex(&data[2000..])));
        // A range past the end: no bytes, and the hash of nothing.
        let (_, out, err) = sh(&read_range(&part, 1000, 3), b"");
        assert!(out.is_empty());
        assert_eq!(trailing_digest(&err), Some(hex(b"")));
        let (_, out, _) = sh(&hash_ranges(&part, 1000, &[1, 2]), b"");
        let lines: Vec<Option<String>> =
            String::from_utf8_lossy(&out).lines().map(digest).collect();
        assert_eq!(
            lines,
            [Some(hex(&data[1000..2000])), Some(hex(&data[2000..]))]
        );
    }

    #[test]
    fn the_follower_hashes_the_ranges_named_then_seals_on_request() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("it's a part").display().to_string();
        let dest = dir.path().join("done \\ here").display().to_string();
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&part, &data).unwrap();
        let follow = follow_ranges(&part, 1000, &dest, 2500, 0o640);
        // No verdict: the hash, and the part left where it is.
        let (code, out, _) = sh(&follow, b"1\nend\n");
        assert_eq!(code, 1);
        assert_eq!(
            String::from_utf8_lossy(&out)
                .lines()
                .map(digest)
                .collect::<Vec<_>>(),
            [Some(hex(&data[1000..2000]))]
        );
        assert!(std::path::Path::new(&part).exists());
        let (_, out, _) = sh(&follow, b"0\n1\n2\nend\nkeep\n");
        assert_eq!(digest(&String::from_utf8_lossy(&out)), Some(hex(&data)));
        assert!(!std::path::Path::new(&dest).exists());
        // Sealed: moved, with its mode, and said so.
        let (code, out, _) = sh(&follow, b"0\n1\n2\nend\nseal\n");
        assert_eq!(code, 0);
        let out = String::from_utf8_lossy(&out);
        assert_eq!(out.lines().nth(1), Some("sealed"));
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // Nowhere to move it: no `sealed`.
        std::fs::write(&part, &data).unwrap();
        let lost = dir.path().join("gone/x").display().to_string();
        let follow = follow_ranges(&part, 1000, &lost, 2500, 0o640);
        let (code, out, _) = sh(&follow, b"end\nseal\n");
        assert_ne!(code, 0);
        assert!(!String::from_utf8_lossy(&out).contains("sealed"));
    }

    #[test]
    fn a_renamed_part_gets_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("a part").display().to_string();
        let dest = dir.path().join("it's done").display().to_string();
        std::fs::write(&part, b"0123xx").unwrap();
        assert_eq!(sh(&rename(&part, &dest, 4, 0o600), b"").0, 0);
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Again, with the part gone: refused, and the copy in place kept.
        let (code, _, err) = sh(&rename(&part, &dest, 4, 0o600), b"");
        assert_ne!(code, 0);
        assert_eq!(complaint(&err), "the partial copy is gone");
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123");
        assert!(!std::path::Path::new(&part).exists());
    }

    #[test]
    fn probe_and_list_describe_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a b/c")).unwrap();
        std::fs::write(dir.path().join("a b/c/x y"), b"12345").unwrap();
        let root = dir.path().display().to_string();
        assert_eq!(sh(&probe(&root), b"").1, b"d\n");
        let file = format!("{root}/a b/c/x y");
        let out = String::from_utf8(sh(&probe(&file), b"").1).unwrap();
        assert!(out.starts_with("f 5 "), "{out}");
        assert_eq!(sh(&probe(&format!("{root}/none")), b"").1, b"n\n");
        let (code, out, _) = sh(&list_tree(&root), b"");
        assert_eq!(code, 0);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("d ./a b/c\n"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("f 5 ") && l.ends_with(" ./a b/c/x y")),
            "{out}"
        );
    }

    #[test]
    fn complaints_skip_dd_statistics() {
        let stderr = b"1+0 records in\n1+0 records out\n\
            dd: error writing '/x/p': No space left on device\n";
        assert_eq!(
            complaint(stderr),
            "dd: error writing '/x/p': No space left on device"
        );
        assert_eq!(
            complaint(b"sh: 1: cannot create /r/p: Read-only file system\n"),
            "sh: 1: cannot create /r/p: Read-only file system"
        );
    }
}
