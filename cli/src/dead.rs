//! `ebbtide dead-letters`: list a stream's dead letters, send them back to
//! their partitions once the fault is fixed, or remove them.

use ebbtide_redis::{DeadLetter, DeadLetters};

#[derive(clap::Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// Which stream's dead letters.
#[derive(clap::Args)]
pub struct Target {
    /// The Redis server, such as redis://127.0.0.1:6379/.
    #[arg(long, value_name = "URL")]
    redis: String,
    /// The stream whose dead letters (`NAME:dead`) to work on.
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// The stream's partition count (redriven messages go to their key's
    /// partition, so it must match the producer's).
    #[arg(long, default_value = "16", value_parser = crate::broker::partitions)]
    partitions: u32,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Print dead letters, oldest first.
    List {
        #[command(flatten)]
        target: Target,
        /// How many, at most.
        #[arg(long, default_value = "20", value_parser = crate::units::count)]
        count: usize,
        /// Start after this entry ID (the last one of the page before).
        #[arg(long, value_name = "ID", value_parser = entry_id)]
        after: Option<String>,
    },
    /// Send dead letters back to their partitions as new messages, each
    /// removed from the dead letters in the same atomic step.
    Redrive {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        which: Which,
    },
    /// Remove dead letters for good.
    Remove {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        which: Which,
    },
}

#[derive(clap::Args)]
pub struct Which {
    #[command(flatten)]
    chosen: Chosen,
    /// With `--all`: only the dead letters of this key.
    #[arg(long, value_name = "KEY", conflicts_with = "ids")]
    key: Option<String>,
    /// With `--all`: only the dead letters whose error contains this text.
    #[arg(long, value_name = "TEXT", conflicts_with = "ids")]
    error_contains: Option<String>,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Chosen {
    /// These entry IDs (repeat the flag for more).
    #[arg(long = "id", value_name = "ID", value_parser = entry_id)]
    ids: Vec<String>,
    /// Every dead letter (narrowed by `--key` and `--error-contains`).
    #[arg(long)]
    all: bool,
}

impl Which {
    /// Whether `--all` with its filters picks `l`.
    fn picks(&self, l: &DeadLetter) -> bool {
        self.key
            .as_ref()
            .is_none_or(|k| l.key() == Some(k.as_bytes()))
            && self
                .error_contains
                .as_ref()
                .is_none_or(|t| l.error().is_some_and(|e| e.contains(t.as_str())))
    }
}

fn entry_id(s: &str) -> Result<String, String> {
    ebbtide_redis::check_entry_id(s)
        .map(str::to_string)
        .map_err(|_| format!("`{s}` is not a stream entry ID such as 1700000000000-0"))
}

pub fn run(args: &DeadLettersArgs) -> bool {
    let target = match &args.action {
        Action::List { target, .. }
        | Action::Redrive { target, .. }
        | Action::Remove { target, .. } => target,
    };
    let stream = match crate::broker::stream(&target.stream, target.partitions) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let dead_stream = stream.dead_letter_stream();
    let mut dead = match DeadLetters::connect(&target.redis, stream) {
        Ok(d) => d,
        Err(e) => return fail(&e.to_string()),
    };
    let result = match &args.action {
        Action::List { count, after, .. } => {
            list(&mut dead, &dead_stream, *count, after.as_deref())
        }
        Action::Redrive { which, .. } => redrive(&mut dead, which),
        Action::Remove { which, .. } => remove(&mut dead, which),
    };
    match result {
        Ok(()) => true,
        Err(e) => fail(&e.to_string()),
    }
}

fn list(
    dead: &mut DeadLetters,
    dead_stream: &str,
    count: usize,
    after: Option<&str>,
) -> Result<(), ebbtide_redis::Error> {
    let page = dead.list(after, count)?;
    let total = dead.len()?;
    println!("{total} dead letters in {dead_stream:?}");
    for letter in &page {
        println!("{}", line(letter));
    }
    if page.len() == count {
        if let Some(last) = page.last() {
            println!("more after: --after {}", last.id());
        }
    }
    Ok(())
}

/// One dead letter on one line.
fn line(l: &DeadLetter) -> String {
    let unknown = "?";
    let mut s = format!(
        "{}  from {} ({})  attempts {}  consumer {}",
        l.id(),
        l.source().unwrap_or(unknown),
        l.source_id().unwrap_or(unknown),
        l.attempts()
            .map_or_else(|| unknown.to_string(), |a| a.to_string()),
        l.consumer().unwrap_or(unknown),
    );
    match (l.key(), l.payload()) {
        (Some(k), Some(p)) => {
            s.push_str(&format!("  key {}  payload {}", shown(k), shown(p)));
        }
        _ => {
            let fields: Vec<String> = l
                .original_fields()
                .map(|(k, v)| format!("{}={}", shown(k), shown(v)))
                .collect();
            s.push_str(&format!("  not a message: {}", fields.join(" ")));
        }
    }
    s.push_str(&format!("  error: {}", l.error().unwrap_or(unknown)));
    s
}

/// Bytes as an escaped, quoted string, cut after 60.
fn shown(b: &[u8]) -> String {
    const MAX: usize = 60;
    let text: String = b[..b.len().min(MAX)].escape_ascii().to_string();
    if b.len() > MAX {
        format!("\"{text}\"… ({} bytes)", b.len())
    } else {
        format!("\"{text}\"")
    }
}

fn redrive(dead: &mut DeadLetters, which: &Which) -> Result<(), ebbtide_redis::Error> {
    if which.chosen.all {
        let done = dead.redrive_if(|l| which.picks(l))?;
        println!("redrove {} dead letters", done.sent);
        if !done.kept.is_empty() {
            println!(
                "kept {} that are not messages: {}",
                done.kept.len(),
                done.kept.join(" ")
            );
        }
        if done.passed > 0 {
            println!("left {} that did not match", done.passed);
        }
        return Ok(());
    }
    for id in &which.chosen.ids {
        match dead.redrive(id)? {
            Some(new) => println!("redrove {id} as {new}"),
            None => println!("no dead letter {id}"),
        }
    }
    Ok(())
}

fn remove(dead: &mut DeadLetters, which: &Which) -> Result<(), ebbtide_redis::Error> {
    if which.chosen.all {
        let removed = dead.remove_if(|l| which.picks(l))?;
        println!("removed {removed} dead letters");
        return Ok(());
    }
    for id in &which.chosen.ids {
        if dead.remove(id)? {
            println!("removed {id}");
        } else {
            println!("no dead letter {id}");
        }
    }
    Ok(())
}

fn fail(why: &str) -> bool {
    eprintln!("error: {why}");
    false
}
