//! docs/ARCHITECTURE.md's code map names every source file (issue 24): a file added without
//! its one-line entry fails here, with the entries to write.

use std::path::Path;

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

#[test]
fn the_code_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("src"), root, &mut files);
    files.sort();
    assert!(files.len() > 50, "only {} files found", files.len());
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| !doc.contains(&format!("- `{f}` —")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's code map lacks a line `- `path` — what it does` for:\n{}",
        missing
            .iter()
            .map(|f| format!("- `{f}` — …"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // And names no file that is gone.
    for line in doc.lines().filter(|l| l.starts_with("- `src/")) {
        let path = line.trim_start_matches("- `").split('`').next().unwrap();
        assert!(
            root.join(path).exists(),
            "the code map names {path}, which does not exist"
        );
    }
}
