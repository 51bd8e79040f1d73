//! Controlling running work: task groups (fail-fast or collect-all, a
//! concurrency limit, nesting) and the pause guard. Deadlines and
//! cancellation tokens live with the tasks (`task::cancel`), the circuit
//! breaker with admission (`sched::breaker`): both are consulted on the
//! hot path, below this layer.

pub(crate) mod group;
pub(crate) mod pause;
