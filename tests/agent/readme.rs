//! The README's tables follow the code: the failure reasons (same labels, order and
//! descriptions as `FailureReason`), the kinds and their keys (`check_kinds!` and each
//! keys struct), and the metric families the kinds declare (`CheckKind::MEASURES`).

use coexistd::kinds::{FailureReason, Kind};

#[test]
fn the_readme_lists_every_failure_reason_as_the_code_does() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Failure reasons").nth(1).expect("a Failure reasons section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let rows: Vec<(String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].to_owned())
        })
        .collect();
    let want: Vec<(String, String)> =
        FailureReason::ALL.iter().map(|r| (r.as_str().to_owned(), r.description().to_owned())).collect();
    assert_eq!(rows, want, "regenerate the table from src/failure.rs");
}

#[test]
fn the_readme_lists_every_check_kind_with_the_keys_its_struct_declares() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## What it checks today").nth(1).expect("a What it checks today section");
    let section = section.split("\n\n").nth(1).unwrap_or_default();
    let rows: Vec<(String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].replace('`', ""))
        })
        .collect();
    let want: Vec<(String, String)> =
        Kind::ALL.iter().map(|k| (k.as_str().to_owned(), k.keys().join(", "))).collect();
    assert_eq!(rows, want, "the kinds table follows the check_kinds! list and each kind's keys struct");
}

#[test]
fn the_readme_lists_every_family_a_kind_declares_with_the_kinds_that_fill_it() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let measures = coexistd::kinds::measures();
    assert!(!measures.is_empty());
    for m in measures {
        let head = match m.label {
            Some(l) => format!("| `{}{{{l}}}` | gauge | ", m.name),
            None => format!("| `{}` | gauge | ", m.name),
        };
        let row =
            readme.lines().find(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("no README row {head}"));
        let (who, _) = row[head.len()..].split_once(": ").unwrap_or_else(|| panic!("{row}: names no kind"));
        let want: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| k.measures().iter().any(|d| d.name == m.name))
            .map(|k| format!("`{}`", k.as_str()))
            .collect();
        assert_eq!(who, want.join(", "), "the kinds that declare {} (in list order)", m.name);
    }
}
