//! The image project `init` writes: this repository's own project files, embedded at build
//! time (build.rs lists them), plus a README and .gitignore meant for a new project.

pub struct ProjectFile {
    /// Relative to the project directory.
    pub path: &'static str,
    pub mode: u32,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/project_files.rs"));

pub fn get(path: &str) -> Option<&'static ProjectFile> {
    FILES.iter().find(|f| f.path == path)
}
