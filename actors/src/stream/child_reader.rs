//! The source of a database dump: a dump tool's stdout, read as the tool writes it and cut
//! into the pipeline's chunks.
//!
//! A dump that did not finish is never an archive (the AWS Backup Actions sample's missing
//! `pipefail`): the last chunk is sent only after the tool has exited 0 without reporting an
//! error on stderr, and the sender stays open until then, so the pipeline cannot complete
//! before the verdict; a non-zero exit, a signal or an error line ends the stream with
//! [`StreamError::Source`] instead. The child is killed if the pipeline stops reading.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{SourceItem, StreamError};

/// Bytes of the tool's stderr kept for the error message (its last ones).
const STDERR_KEPT: usize = 16 * 1024;

/// Runs `cmd` and streams its stdout as chunks of `chunk` bytes (the last shorter). `tool`
/// names it in errors; every string in `secrets` is replaced by `***` in what it printed.
pub fn child_reader(
    mut cmd: Command,
    tool: String,
    secrets: Vec<String>,
    chunk: usize,
    capacity: usize,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    tokio::spawn(async move {
        if let Err(e) = run(cmd, &tool, &secrets, chunk.max(1), &tx).await {
            let _closed = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn run(
    mut cmd: Command,
    tool: &str,
    secrets: &[String],
    chunk: usize,
    tx: &mpsc::Sender<Result<SourceItem, StreamError>>,
) -> Result<(), StreamError> {
    let mut child =
        cmd.spawn().map_err(|e| StreamError::Source(format!("starting {tool}: {e} (is it installed and on PATH?)")))?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(StreamError::Internal(format!("{tool}: no pipes")));
    };
    let errors = tokio::spawn(tail(stderr));
    let (mut offset, mut buf) = (0u64, vec![0u8; chunk]);
    let mut filled = 0;
    loop {
        let n = stdout
            .read(&mut buf[filled..])
            .await
            .map_err(|e| StreamError::Source(format!("reading {tool}'s output: {e}")))?;
        if n == 0 {
            break;
        }
        filled += n;
        if filled == chunk {
            let bytes = std::mem::replace(&mut buf, vec![0u8; chunk]);
            if tx.send(Ok(SourceItem::Data { offset, bytes })).await.is_err() {
                return Ok(()); // the pipeline stopped; dropping `child` kills the tool
            }
            (offset, filled) = (offset + chunk as u64, 0);
        }
    }
    let status = child.wait().await.map_err(|e| StreamError::Source(format!("waiting for {tool}: {e}")))?;
    let stderr = errors.await.map_err(|e| StreamError::Internal(format!("{tool}'s stderr reader: {e}")))?;
    verdict(tool, status, &redact(&stderr, secrets))?;
    buf.truncate(filled);
    if !buf.is_empty() {
        let _closed = tx.send(Ok(SourceItem::Data { offset, bytes: buf })).await;
    }
    Ok(())
}

/// The last [`STDERR_KEPT`] bytes of a stream, read to its end.
pub(crate) async fn tail(mut r: impl AsyncRead + Unpin) -> String {
    let (mut kept, mut buf) = (Vec::new(), [0u8; 4096]);
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_KEPT {
            kept.drain(..kept.len() - STDERR_KEPT);
        }
    }
    let start = kept.len().saturating_sub(STDERR_KEPT);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

/// Replaces every secret in `text` by `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

/// Whether a tool's run counts: exit 0 and no error line on stderr.
pub fn verdict(tool: &str, status: ExitStatus, stderr: &str) -> Result<(), StreamError> {
    let said = stderr.trim();
    let detail = if said.is_empty() { String::new() } else { format!(": {said}") };
    if let Some(sig) = status.signal() {
        return Err(StreamError::Source(format!("{tool} was killed by signal {sig} before it finished{detail}")));
    }
    if !status.success() {
        let code = status.code().unwrap_or(-1);
        return Err(StreamError::Source(format!("{tool} exited with status {code}{detail}")));
    }
    if let Some(line) = said.lines().find(|l| is_error_line(l)) {
        return Err(StreamError::Source(format!("{tool} reported an error although it exited 0: {line}")));
    }
    Ok(())
}

/// Whether a stderr line is a dump or client tool reporting an error: `pg_dump: error: …`,
/// `mariadb-dump: Got error: …`, `mysqldump: Error: …`, `ERROR 1045 (28000) …`,
/// `psql:…: ERROR:  …`. A warning is not one, nor a line that merely names something
/// `error…` (a table `error_log` in a warning about its constraints).
pub fn is_error_line(line: &str) -> bool {
    let l = line.trim().to_ascii_lowercase();
    if l.contains("warning:") {
        return false;
    }
    l.starts_with("error") && !l.starts_with("error_")
        || l.contains("error:")
        || l.contains("got error")
        || l.contains(": error ")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(script: &str, chunk: usize) -> (Vec<u8>, Option<StreamError>) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        let mut rx = child_reader(cmd, "sh".into(), vec!["hunter2".into()], chunk, 2);
        let (mut out, mut err) = (Vec::new(), None);
        while let Some(item) = rx.recv().await {
            match item {
                Ok(SourceItem::Data { offset, bytes }) => {
                    assert_eq!(offset, out.len() as u64);
                    out.extend(bytes);
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => err = Some(e),
            }
        }
        (out, err)
    }

    #[tokio::test]
    async fn a_clean_exit_yields_every_byte_in_chunks() {
        let (out, err) = collect("head -c 10000 /dev/zero | tr '\\0' x; echo warning: fine >&2", 4096).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, vec![b'x'; 10000]);
    }

    #[tokio::test]
    async fn a_failed_killed_or_complaining_tool_never_ends_cleanly() {
        let (out, err) = collect("printf 'partial'; echo 'pg_dump: error: hunter2 rejected' >&2; exit 1", 4096).await;
        let e = err.expect("fails").to_string();
        assert!(e.contains("status 1") && e.contains("***") && !e.contains("hunter2"), "{e}");
        assert!(out.is_empty(), "the short tail is withheld");
        let (_, err) = collect("head -c 9000 /dev/zero; kill -9 $$", 4096).await;
        assert!(err.expect("fails").to_string().contains("signal 9"));
        let (_, err) = collect("echo 'mysqldump: Got error: 2013: Lost connection' >&2; exit 0", 4096).await;
        assert!(err.expect("fails").to_string().contains("reported an error"));
    }

    #[test]
    fn error_lines_are_the_tools_errors_not_words_in_warnings() {
        for line in [
            "pg_dump: error: query failed: server closed the connection",
            "mariadb-dump: Got error: 1044: Access denied",
            "mysqldump: Error: 'Lost connection to server during query'",
            "ERROR 1045 (28000): Access denied for user 'admin'",
            "psql:<stdin>:12: ERROR:  relation \"t\" does not exist",
            "error: connection to server failed",
        ] {
            assert!(is_error_line(line), "{line}");
        }
        for line in [
            "pg_dump: warning: there are circular foreign-key constraints on this table: error_log",
            "pg_dump: detail: You might not be able to restore the dump without using --disable-triggers",
            "mariadb-dump: Deprecated program name. It will be removed in a future release, use 'mariadb-dump' instead",
            "error_log",
            "Warning: Using a password on the command line interface can be insecure. error: none",
        ] {
            assert!(!is_error_line(line), "{line}");
        }
    }
}
