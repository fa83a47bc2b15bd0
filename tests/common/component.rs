//! Component functions in a test project, made by `sluice build` with the componentize
//! tools it installed in the repository (scripts/test.sh builds the example components).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Project;

/// The repository's component tools folder.
pub fn repository_tools() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".sluice").join("tools").join("component");
    assert!(
        tools.is_dir(),
        "{} lacks componentize-py and componentize-js: run `sluice build` in the repository (scripts/test.sh does)",
        tools.display()
    );
    tools
}

/// The probe handler (tests/fixtures/component-probe/app.py): one action per event.
pub fn probe_source() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/component-probe/app.py")).unwrap()
}

impl Project {
    /// Adds a component function made from `files` (name, content) by `sluice build`:
    /// `functions/<name>/function.toml` with `name`, `runtime = "component"` and `toml`.
    /// The project shares the repository's componentize tools. Returns the function's folder.
    pub fn component_function(&self, name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path().join("functions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("function.toml"), format!("name = {name:?}\nruntime = \"component\"\n{toml}\n")).unwrap();
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        let tools = self.path().join(".sluice").join("tools");
        if !tools.join("component").exists() {
            std::fs::create_dir_all(&tools).unwrap();
            std::os::unix::fs::symlink(repository_tools(), tools.join("component")).unwrap();
        }
        dir
    }

    /// `sluice build NAMES...`, which must succeed; returns its stdout and stderr.
    pub fn build(&self, names: &[&str]) -> String {
        let mut args = vec!["build"];
        args.extend_from_slice(names);
        let built = self.sluice_within(&args, Duration::from_secs(600));
        let output = format!("{}{}", String::from_utf8_lossy(&built.stdout), String::from_utf8_lossy(&built.stderr));
        assert!(built.status.success(), "sluice build failed:\n{output}");
        output
    }

    /// `sluice --json invoke NAME --event -` with `event`: the printed document.
    pub fn invoke_json(&self, name: &str, event: &serde_json::Value) -> serde_json::Value {
        let output = self.sluice_with_stdin(&["--json", "invoke", name, "--event", "-"], event.to_string().as_bytes());
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("invoke printed no JSON ({e}):\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}
