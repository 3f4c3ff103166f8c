//! The crate's modules in one order, lowest first, along the data's way (capture -> detect
//! -> align -> estimate -> liveness -> decide -> actuate / host link) with what they share
//! beneath and what wires them above: a module may use only modules before it. So there is
//! no import circle, and a new `use` that goes up fails here, naming the file. Read from the
//! source text: `crate::<module>` outside comments and test code.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first. A new top-level module goes where what it uses is below it.
const LAYERS: &[&str] = &[
    // Shared beneath everything: no crate imports of their own.
    "settings",
    "numeric",
    "domain",
    "input_file",
    "jpeg",
    "warp",
    "digest",
    "photo",
    "engine",
    // The stages, in the data's order.
    "capture",
    "detect",
    "align",
    "estimate",
    "quality",
    "liveness",
    "decide",
    "session",
    "actuate",
    "serial",
    "mdb",
    // The device around the stages, and the parts that configure and wire it.
    "daemon",
    "bundle",
    "telemetry",
    "config",
    "pipeline",
    "tools",
];

/// `crate::<name>` references in `text`, comments and test code left out.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        // A file's own tests are its last item: `#[cfg(test)]` before `mod tests {`.
        let opens_tests = line.trim() == "#[cfg(test)]"
            && lines.get(i + 1).is_some_and(|next| {
                let next = next.trim();
                next.starts_with("mod ") && next.ends_with('{')
            });
        if opens_tests {
            break;
        }
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // The crate's root, the binary's command line, and files that are test modules.
        if ["lib", "main", "cli"].contains(&top.as_str())
            || name == "tests.rs"
            || name.ends_with("_tests.rs")
        {
            continue;
        }
        let Some(level) = LAYERS.iter().position(|l| *l == top) else {
            unplaced.insert(top);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for used in crate_uses(&text) {
            if used == top {
                continue;
            }
            match LAYERS.iter().position(|l| *l == used) {
                Some(u) if u < level => {}
                Some(_) => upward.push(format!("{}: {top} uses {used}", rel.display())),
                None => {
                    unplaced.insert(used);
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS: {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "uses of a module at or above the user's place in LAYERS:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reader_finds_uses_and_skips_comments_and_tests() {
    let text = "use crate::detect::Face;\n// crate::tools in a comment\n#[cfg(test)]\nmod a_tests;\n\
                fn f() { crate::warp::x(); }\n#[cfg(test)]\nmod tests {\n    use crate::tools::stats;\n}\n";
    let found: Vec<String> = crate_uses(text).into_iter().collect();
    assert_eq!(found, ["detect", "warp"]);
}
