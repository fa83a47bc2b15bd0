//! Lambda functions in a test project: handler files, the runtime clients that
//! `sluice build` installed in the repository (scripts/test.sh runs it), and reading what
//! the handlers report about their processes.

use std::path::{Path, PathBuf};

use super::Project;

/// The repository's tools folder, where `sluice build` installed the runtime clients.
pub fn repository_tools() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".sluice").join("tools").join("lambda");
    assert!(
        tools.join("python3.11").is_dir() && tools.join("nodejs20").is_dir(),
        "{} lacks the Lambda runtime clients: run `sluice build` in the repository (scripts/test.sh does)",
        tools.display()
    );
    tools
}

impl Project {
    /// Adds a Lambda function: `functions/<name>/function.toml` with `name` and `toml`, plus
    /// `files` (name, content) in its folder. The project shares the repository's runtime
    /// clients. Returns the function's folder.
    pub fn lambda_function(&self, name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path().join("functions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("function.toml"), format!("name = {name:?}\n{toml}\n")).unwrap();
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        let tools = self.path().join(".sluice").join("tools");
        if !tools.join("lambda").exists() {
            std::fs::create_dir_all(&tools).unwrap();
            std::os::unix::fs::symlink(repository_tools(), tools.join("lambda")).unwrap();
        }
        dir
    }
}

/// An example handler file of the repository, unchanged.
pub fn example_source(function: &str, file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("functions").join(function).join(file)).unwrap()
}

/// Whether a process is running (not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
