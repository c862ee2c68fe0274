//! Supervision that really restarts: [`supervise`] runs an actor made by a factory, watches
//! its task, and when a panic kills it (actix's own `Supervisor` only restarts actors that
//! stop themselves, and dies with them on a panic) counts the restart, reports it to the
//! failure reporter, waits a backoff and makes a fresh actor from the factory — state is
//! rebuilt from AWS, never carried over. Callers hold a [`Relay`]'s recipient, whose address
//! outlives restarts; a message lost with the dead actor is sent again to the new one when it
//! is safe to repeat ([`Relayed::again`]).

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::watch;
use tracing::{error, warn};

use super::Backoff;
use crate::metrics::{Metric, Metrics};
use crate::system::ReportFailure;
use std::sync::Arc;

/// How long a relayed message waits for a restarted actor before it is answered
/// [`Relayed::unavailable`].
const RESTART_WAIT: Duration = Duration::from_secs(120);

/// An actor that ran this long without a panic starts its restart count afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(600);

/// A message that may go through a [`Relay`].
pub trait Relayed: Message + Send + Sized + 'static
where
    Self::Result: Send,
{
    /// The answer when the actor is gone and does not come back in time.
    fn unavailable() -> Self::Result;

    /// A copy to send again to the restarted actor when the first was lost with the dead
    /// one; `None` (the default) for messages not safe to repeat.
    fn again(&self) -> Option<Self> {
        None
    }

    /// Whether an answer says the message was lost with a dying actor (e.g. a job actor's
    /// open jobs end `Stopped` when it dies), so the relay sends it [`Relayed::again`].
    fn lost(_answer: &Self::Result) -> bool {
        false
    }
}

/// The current actor: its generation (1 for the first) and its address while it runs.
type Current<A> = (u64, Option<Addr<A>>);

/// A supervised actor: its stable relay and its current address.
pub struct Supervised<A: Actor<Context = Context<A>>> {
    current: watch::Receiver<Current<A>>,
    relay: Addr<Relay<A>>,
}

impl<A: Actor<Context = Context<A>>> Clone for Supervised<A> {
    fn clone(&self) -> Self {
        Supervised { current: self.current.clone(), relay: self.relay.clone() }
    }
}

impl<A: Actor<Context = Context<A>>> Supervised<A> {
    /// The running actor's address (`None` while it is being restarted or after the
    /// supervisor gave up).
    pub fn addr(&self) -> Option<Addr<A>> {
        self.current.borrow().1.clone()
    }

    /// Whether an actor is running now (for `/healthz`).
    pub fn connected(&self) -> bool {
        self.addr().is_some_and(|a| a.connected())
    }

    /// How many actors were made so far (1 + restarts).
    pub fn generation(&self) -> u64 {
        self.current.borrow().0
    }

    /// A recipient that reaches whichever actor runs now.
    pub fn recipient<M>(&self) -> Recipient<M>
    where
        M: Relayed,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.relay.clone().recipient()
    }

    /// Sends `msg` to whichever actor runs now (see [`Relay`]).
    pub async fn send<M>(&self, msg: M) -> M::Result
    where
        M: Relayed,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.relay.send(msg).await.unwrap_or_else(|_| M::unavailable())
    }
}

/// Starts the actor `factory` makes, under supervision named `name`: a panic that kills it is
/// counted in `bunker_actor_restarts_total{actor=name}`, reported to `failures`, and followed
/// after `restarts.delay(n)` by a fresh actor, until more than `restarts.max_retries` restarts
/// come in a row (each run shorter than ten minutes): then it stays down and `/healthz` says
/// so. An actor that stops itself is not restarted. Call inside a running actix System.
pub fn supervise<A, F>(
    name: &'static str,
    factory: F,
    restarts: Backoff,
    metrics: Arc<Metrics>,
    failures: Option<Recipient<ReportFailure>>,
) -> Supervised<A>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + 'static,
{
    let spawn = move || {
        let ctx = Context::new();
        let addr = ctx.address();
        (addr, actix::spawn(ctx.into_future(factory())))
    };
    let (addr, first) = spawn();
    let (tx, rx) = watch::channel((1, Some(addr)));
    actix::spawn(async move {
        let (mut task, mut in_a_row) = (first, 0u32);
        loop {
            let started = tokio::time::Instant::now();
            let Err(died) = task.await else {
                tx.send_modify(|c| c.1 = None); // stopped on purpose
                return;
            };
            tx.send_modify(|c| c.1 = None);
            in_a_row = if started.elapsed() >= HEALTHY_RUN { 1 } else { in_a_row + 1 };
            let message = panic_message(died);
            metrics.inc(Metric::ActorRestartsTotal, &[("actor", name)]);
            if restarts.gives_up(in_a_row - 1) {
                error!(actor = name, error = %message, restarts = in_a_row - 1, "actor keeps failing; left stopped");
                report(&failures, name, format!("{message} (left stopped after {} restarts)", in_a_row - 1)).await;
                return;
            }
            warn!(actor = name, error = %message, restart = in_a_row, "actor died; restarting");
            report(&failures, name, message).await;
            tokio::time::sleep(restarts.delay(in_a_row, u64::from(in_a_row))).await;
            let (addr, next) = spawn();
            task = next;
            tx.send_modify(|c| *c = (c.0 + 1, Some(addr)));
        }
    });
    let relay = Relay { current: rx.clone() }.start();
    Supervised { current: rx, relay }
}

async fn report(failures: &Option<Recipient<ReportFailure>>, actor: &'static str, message: String) {
    if let Some(f) = failures {
        if let Err(e) = f.send(ReportFailure { actor, message }).await {
            warn!(actor, error = %e, "failure reporter unavailable");
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("task cancelled: {e}");
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    format!("panicked: {text}")
}

/// Forwards messages to the supervised actor of the moment. Its handlers only forward, so it
/// cannot panic itself; its futures run concurrently, so back-pressure is the actor's own
/// mailbox (callers `send().await`).
pub struct Relay<A: Actor<Context = Context<A>>> {
    current: watch::Receiver<Current<A>>,
}

impl<A: Actor<Context = Context<A>>> Actor for Relay<A> {
    type Context = Context<Self>;
}

/// The actor of generation later than `after` (or `None` when none comes in time).
async fn next_actor<A: Actor<Context = Context<A>>>(
    current: &mut watch::Receiver<Current<A>>,
    after: u64,
) -> Option<Addr<A>> {
    let wait = current.wait_for(|c| c.0 > after && c.1.is_some());
    match tokio::time::timeout(RESTART_WAIT, wait).await {
        Ok(Ok(c)) => c.1.clone(),
        _ => None,
    }
}

/// Sends `msg` to the actor made after generation `after`.
async fn resend<A, M>(current: &mut watch::Receiver<Current<A>>, after: u64, msg: M) -> M::Result
where
    A: Actor<Context = Context<A>> + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Relayed,
    M::Result: Send,
{
    match next_actor(current, after).await {
        Some(a) => a.send(msg).await.unwrap_or_else(|_| M::unavailable()),
        None => M::unavailable(),
    }
}

impl<A, M> Handler<M> for Relay<A>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Relayed,
    M::Result: Send,
{
    type Result = ResponseFuture<M::Result>;

    fn handle(&mut self, msg: M, _ctx: &mut Self::Context) -> Self::Result {
        let mut current = self.current.clone();
        Box::pin(async move {
            let (generation, addr) = current.borrow_and_update().clone();
            let addr = match addr {
                Some(a) => a,
                None => match next_actor(&mut current, generation).await {
                    Some(a) => a,
                    None => return M::unavailable(),
                },
            };
            let again = msg.again();
            match (addr.send(msg).await, again) {
                (Ok(answer), Some(msg)) if M::lost(&answer) => resend(&mut current, generation, msg).await,
                (Ok(answer), _) => answer,
                (Err(_), Some(msg)) => resend(&mut current, generation, msg).await,
                (Err(_), None) => M::unavailable(),
            }
        })
    }
}
