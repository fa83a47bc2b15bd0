//! The Lambda handler a component is built from: `app.lambda_handler` (Python, `app.py`) or
//! `index.handler` (JavaScript, `index.js`, `.mjs` or `.cjs`), found in the function's folder.

use std::path::{Path, PathBuf};

use crate::config::RuntimeKind;
use crate::runtime::lambda::HandlerName;

/// The handler's language, which picks the tool that builds the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
}

/// A handler and the file that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub language: Language,
    pub file: PathBuf,
    /// As Python imports it (`app`, `pkg.handlers`), or the JavaScript file's path relative to
    /// the folder without extension (`index`, `src/index`).
    pub module: String,
    pub function: String,
}

/// Checks the form `file.function`, without looking at the folder.
pub fn parse(handler: &str) -> Result<HandlerName, String> {
    HandlerName::parse(RuntimeKind::Component, handler)
}

/// Finds the handler's file: `<module>.py` (dots are packages, as Lambda reads Python
/// handlers), else `<module>.js`, `.mjs` or `.cjs`.
pub fn find(handler: &str, folder: &Path) -> Result<Source, String> {
    let name = parse(handler)?;
    let python = HandlerName { module: name.module.replace('.', "/"), function: name.function.clone() };
    if let Some(file) = python.find(RuntimeKind::Python { minor: 0 }, folder) {
        return Ok(Source { language: Language::Python, file, module: name.module, function: name.function });
    }
    if let Some(file) = name.find(RuntimeKind::Node { major: 0 }, folder) {
        return Ok(Source { language: Language::JavaScript, file, module: name.module, function: name.function });
    }
    Err(format!(
        "handler {handler:?}: neither {m}.py nor {m}.js, {m}.mjs or {m}.cjs is in {}",
        folder.display(),
        m = name.module
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

    use super::*;

    #[test]
    fn the_file_picks_the_language() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "def lambda_handler(e, c): return e\n").unwrap();
        std::fs::write(dir.path().join("index.mjs"), "export const handler = async (e) => e;\n").unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/handlers.py"), "").unwrap();

        let python = find("app.lambda_handler", dir.path()).unwrap();
        assert_eq!((python.language, python.module.as_str(), python.function.as_str()), (Language::Python, "app", "lambda_handler"));
        assert_eq!(find("pkg.handlers.handle", dir.path()).unwrap().file, dir.path().join("pkg/handlers.py"));
        let js = find("index.handler", dir.path()).unwrap();
        assert_eq!((js.language, js.file.clone()), (Language::JavaScript, dir.path().join("index.mjs")));

        let missing = find("main.handler", dir.path()).unwrap_err();
        assert!(missing.contains("main.py") && missing.contains("main.js"), "{missing}");
        assert!(find("app", dir.path()).unwrap_err().contains("file.function"));
        assert!(find("../app.handler", dir.path()).is_err());
    }
}
