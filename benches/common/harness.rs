//! What the benches that run each design in a child process of their own
//! share: their arguments, the child's figures, and medians.

use std::process::Command;

/// The bench's own arguments: cargo's and criterion's `--…` flags left out.
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

/// Runs this bench again with `args` (its child mode), and returns the
/// numbers on the last line it printed, after the first `skip` words.
///
/// # Panics
/// When the child fails (with its standard error) or prints no numbers
/// there.
pub fn child_figures(args: &[&str], skip: usize) -> Vec<f64> {
    let me = std::env::current_exe().expect("the bench's own path");
    let out = Command::new(me)
        .args(args)
        .output()
        .expect("the child runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let line = text.lines().last().unwrap_or_default();
    line.split_whitespace()
        .skip(skip)
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("{x:?} in the child's line {line:?}"))
        })
        .collect()
}

/// The median of `v` (the upper one of an even count).
///
/// # Panics
/// When `v` is empty or holds values that do not compare (NaN).
pub fn median<T: PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable figures"));
    v.swap_remove(v.len() / 2)
}
