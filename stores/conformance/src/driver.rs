//! An engine driven against a [`Store`], one command at a time.

use tributary_core::{
    Command, Config, ConnId, Engine, Error, Input, MonoNanos, Now, Output, Reply, ReqId, UnixMillis,
};
use tributary_store_api::Store;

/// An engine and its store, with a virtual clock.
pub struct Driver<'a, S: Store> {
    /// The engine.
    pub engine: Engine,
    store: &'a S,
    /// The clock given to the engine.
    pub now: Now,
    req: u64,
    /// Outputs other than storage requests and the replies `cmd` returned.
    pub outputs: Vec<Output>,
}

impl<'a, S: Store> Driver<'a, S> {
    /// Starts an engine on `store` and waits for its recovery.
    pub async fn start(store: &'a S, config: Config, wall: u64) -> Driver<'a, S> {
        let now = Now {
            mono: MonoNanos(1),
            wall: UnixMillis(wall),
        };
        let engine = match Engine::new(config, 1, now) {
            Ok(e) => e,
            Err(e) => panic!("bad config: {e}"),
        };
        let mut d = Driver {
            engine,
            store,
            now,
            req: 0,
            outputs: Vec::new(),
        };
        d.settle().await;
        assert!(d.engine.is_ready(), "recovery did not finish");
        d
    }

    /// Carries out storage requests until the engine is idle.
    pub async fn settle(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Storage { op, req } => {
                    let result = self.store.execute(req).await;
                    self.engine
                        .handle_input(self.now, Input::StorageDone { op, result });
                }
                other => self.outputs.push(other),
            }
        }
    }

    /// Sends a command on connection 1 and returns its reply.
    pub async fn cmd(&mut self, cmd: Command) -> Result<Reply, Error> {
        self.req += 1;
        let req = ReqId(self.req);
        self.engine.handle_input(
            self.now,
            Input::Client {
                conn: ConnId(1),
                req,
                cmd,
            },
        );
        self.settle().await;
        let i = self
            .outputs
            .iter()
            .position(|o| matches!(o, Output::Reply { req: r, .. } if *r == req))
            .unwrap_or_else(|| panic!("no reply to {req:?}"));
        match self.outputs.remove(i) {
            Output::Reply { reply, .. } => reply,
            _ => unreachable!("matched a reply"),
        }
    }
}
