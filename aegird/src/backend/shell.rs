//! Shell scripts run on a host by backend steps, logged as what they do rather than as the
//! script text (which is noise in an operation log).

use super::executor::HostExecutor;
use crate::engine::{StepContext, StepError};
use crate::model::LogLevel;

/// Run `script` with `sh -c` and positional `args` ($1, $2, ...; passed as arguments, never
/// pasted into the script, so no quoting can go wrong). Its stdout when it exits 0; an error
/// with its stderr otherwise.
pub async fn script(
    cx: &StepContext,
    exec: &dyn HostExecutor,
    what: &str,
    script: &str,
    args: &[&str],
) -> Result<String, StepError> {
    script_input(cx, exec, what, script, args, None).await
}

/// [`script`] with `input` on its standard input: how secrets reach a host (never in an
/// argument, which other users can read in `ps`).
pub async fn script_input(
    cx: &StepContext,
    exec: &dyn HostExecutor,
    what: &str,
    script: &str,
    args: &[&str],
    input: Option<Vec<u8>>,
) -> Result<String, StepError> {
    cx.log(LogLevel::Command, what).await;
    let mut argv = vec!["-c", script, "sh"];
    argv.extend_from_slice(args);
    let out = exec
        .run_input("sh", &argv, input)
        .await
        .map_err(|e| StepError::new(format!("{what}: {e}")))?;
    if !out.success() {
        // Some programs (PHP on the command line) report their errors on stdout.
        let said = match out.stderr.trim() {
            "" => out.stdout.trim(),
            stderr => stderr,
        };
        return Err(StepError::new(format!(
            "{what} failed on {} (exit {:?}): {said}",
            exec.describe(),
            out.code,
        )));
    }
    Ok(out.stdout)
}

/// Write `contents` to `path` on the host (atomically, left alone if identical), logged as
/// such; true if the file changed.
pub async fn write(
    cx: &StepContext,
    exec: &dyn HostExecutor,
    path: &str,
    contents: &str,
    mode: u32,
) -> Result<bool, StepError> {
    cx.log(LogLevel::Command, format!("write {path}")).await;
    exec.write_file(path, contents.as_bytes(), mode)
        .await
        .map_err(|e| StepError::new(e.to_string()))
}
