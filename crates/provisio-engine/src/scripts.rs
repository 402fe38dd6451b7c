//! Script handlers' files: resolving a target inside the scripts directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use provisio_core::handler::validate_script_target;

/// Resolves `target` to an executable file inside `scripts_dir`, following
/// symlinks and refusing any that lead outside it.
pub fn resolve(scripts_dir: &Path, target: &str) -> Result<PathBuf, String> {
    validate_script_target(target)?;
    let dir = scripts_dir.canonicalize().map_err(|e| {
        format!(
            "the scripts directory {} is not usable: {e}",
            scripts_dir.display()
        )
    })?;
    let path = dir.join(target);
    let resolved = path
        .canonicalize()
        .map_err(|_| format!("{target} does not exist in the scripts directory"))?;
    if !resolved.starts_with(&dir) {
        return Err(format!("{target} leads outside the scripts directory"));
    }
    let meta = resolved
        .metadata()
        .map_err(|e| format!("{target} cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{target} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{target} is not executable"));
    }
    Ok(resolved)
}
