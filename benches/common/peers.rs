//! The hand-written peers the benchmarks compare against: the classic
//! channel pool (N threads receiving boxed closures from one channel) and
//! the classic sharded pool (one thread and one channel per shard), plus
//! the key distributions the keyed benchmarks draw from.

#![allow(dead_code)]

use std::hash::Hash;

type Job = Box<dyn FnOnce() + Send>;

/// N threads receiving boxed closures from one unbounded channel.
pub struct ChannelPool {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ChannelPool {
    pub fn new(n: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..n)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        ChannelPool {
            tx: Some(tx),
            threads,
        }
    }

    pub fn execute(&self, f: impl FnOnce() + Send + 'static) {
        self.tx.as_ref().unwrap().send(Box::new(f)).unwrap();
    }
}

impl Drop for ChannelPool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// One thread and one channel per shard; a key's shard is
/// `hash(key) % shards`.
pub struct ShardedPool {
    senders: Vec<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    hasher: ahash::RandomState,
}

impl ShardedPool {
    pub fn new(n: usize) -> Self {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            senders.push(tx);
            threads.push(std::thread::spawn(move || {
                for job in rx {
                    job();
                }
            }));
        }
        ShardedPool {
            senders,
            threads,
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }

    pub fn execute<K: Hash>(&self, key: &K, f: impl FnOnce() + Send + 'static) {
        let shard = (self.hasher.hash_one(key) % self.senders.len() as u64) as usize;
        self.senders[shard].send(Box::new(f)).unwrap();
    }
}

impl Drop for ShardedPool {
    fn drop(&mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `n` keys drawn from Zipf(s = 1) over `keys` keys (key 0 the hottest).
pub fn zipf(n: usize, keys: usize, seed: u64) -> Vec<u32> {
    let weights: Vec<f64> = (1..=keys).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(keys);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut x = seed;
    (0..n)
        .map(|_| {
            let u = (xorshift(&mut x) >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(keys - 1) as u32
        })
        .collect()
}
