//! `Control`: the JSON control socket. It owns the listener; each method is answered by asking the
//! actor that owns the data (through the supervisor). See `methods` for the table.

pub mod methods;
pub mod rpc;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;

use super::StopMsg;
use crate::bus::Bus;
use crate::supervisor::Supervisor;

pub struct Control {
    listener: Option<tokio::net::UnixListener>,
    path: PathBuf,
    sup: Addr<Supervisor>,
    bus: Bus,
    stats: Arc<server::ServerStats>,
    shutdown: watch::Sender<bool>,
}

impl Control {
    /// Bind now (so a bad path fails the boot with a clear error), serve once started.
    pub fn bind(path: PathBuf, sup: Addr<Supervisor>, bus: Bus) -> std::io::Result<Control> {
        let listener = server::bind(&path)?;
        let (tx, _) = watch::channel(false);
        Ok(Control {
            listener: Some(listener),
            path,
            sup,
            bus,
            stats: Arc::default(),
            shutdown: tx,
        })
    }
}

impl Actor for Control {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let dispatch = methods::dispatcher(self.sup.clone(), self.stats.clone());
        tracing::info!(socket = %self.path.display(), "control socket listening");
        actix_rt::spawn(server::serve(
            listener,
            self.path.clone(),
            dispatch,
            self.bus.clone(),
            self.stats.clone(),
            self.shutdown.subscribe(),
        ));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.shutdown.send(true);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Handler<StopMsg> for Control {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        let _ = self.shutdown.send(true);
        ctx.stop();
    }
}
