//! One source frame: what every symbol source (DWARF, .gopclntab, the
//! symbol table) answers for a PC.

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Inlined into the frame after it in the same physical call.
    pub inlined: bool,
}

impl Frame {
    /// Runtime-internal frames are skipped when naming the user's callsite.
    /// That includes runtime code linknamed into other packages, such as
    /// `internal/bytealg.MakeNoZero` (GOROOT/src/runtime/slice.go) or
    /// `reflect.unsafe_New` (GOROOT/src/runtime/malloc.go).
    pub fn is_runtime(&self) -> bool {
        if self.function.starts_with("runtime.") || self.function.starts_with("internal/runtime/") {
            return true;
        }
        let in_runtime_dir = self
            .file
            .as_deref()
            .and_then(|f| f.rsplit_once('/'))
            .is_some_and(|(dir, _)| dir.ends_with("/src/runtime"));
        in_runtime_dir
    }
}
