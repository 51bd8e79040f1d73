//! A keyed ledger: per-account state updated without locks, in order per
//! account, then audited with a fail-fast task group.
//!
//! `cargo run --release --example ledger`

use ebbtide::{GroupError, Pool};
use std::collections::HashMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new()?;
    // Each shard owns the balances of its accounts: no lock, because a
    // shard's tasks run one at a time, in submission order.
    let ledger = pool.keyed_state(|_shard| HashMap::<u32, i64>::new());
    for i in 0..100_000u32 {
        let account = i % 1_000;
        let amount = if i % 3 == 0 { -5 } else { 10 };
        ledger.execute(&account, move |balances| {
            *balances.entry(account).or_default() += amount;
        })?;
    }
    pool.wait_idle();
    let balances: HashMap<u32, i64> = ledger
        .into_states()
        .map_err(|_| "tasks still running")?
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    println!(
        "{} accounts, total {}",
        balances.len(),
        balances.values().sum::<i64>()
    );

    // Audit in parallel; the first failure cancels the rest.
    let mut audit = pool.group::<u32, String>().limit(4);
    for chunk in balances.into_iter().collect::<Vec<_>>().chunks(100) {
        let chunk = chunk.to_vec();
        audit.spawn(move |cx| {
            for (account, balance) in &chunk {
                if cx.is_cancelled() {
                    break;
                }
                if *balance < 0 {
                    return Err(format!("account {account} is overdrawn"));
                }
            }
            Ok(chunk.len() as u32)
        });
    }
    match audit.wait() {
        Ok(checked) => println!("audited {} accounts", checked.iter().sum::<u32>()),
        Err(GroupError::Failed(e)) => println!("audit failed: {e}"),
        Err(e) => println!("audit did not finish: {e}"),
    }
    println!("{}", pool.metrics());
    Ok(())
}
