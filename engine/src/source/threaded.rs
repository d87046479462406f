//! A producer thread feeding chunks of lines through a bounded channel:
//! the shape of every live single-input source (the paced generator, a
//! file or stdin read as it grows).
//!
//! Shutdown never waits for the thread: a read from an idle stdin can block
//! forever, and a signal must still end the process. The thread ends by
//! itself when it next finds the channel closed.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::Duration;

use super::{Batch, Ingest, Pumped, SourceError};
use crate::lines::Chunk;
use crate::output::now_ms;

/// Chunks in flight between the thread and the driver.
const QUEUE_CHUNKS: usize = 64;

/// Hands chunks to the driver; false once the driver has gone.
pub struct ChunkSender(SyncSender<Chunk>);

impl ChunkSender {
    /// Send one chunk, waiting while the driver is behind.
    pub fn send(&self, chunk: Chunk) -> bool {
        self.0.send(chunk).is_ok()
    }
}

/// The driver's end: chunks arrive in order from one producer thread.
pub struct ThreadedSource {
    receiver: Receiver<Chunk>,
}

impl ThreadedSource {
    /// Run `produce` on a thread named `name`.
    pub fn spawn(
        name: &str,
        produce: impl FnOnce(ChunkSender) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(QUEUE_CHUNKS);
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || produce(ChunkSender(sender)))?;
        Ok(Self { receiver })
    }
}

impl super::Source for ThreadedSource {
    fn pump(&mut self, timeout: Duration, ingest: &mut dyn Ingest) -> Result<Pumped, SourceError> {
        match self.receiver.recv_timeout(timeout) {
            Ok(chunk) => {
                ingest.pipeline().source_active(now_ms());
                ingest.batch(&Batch {
                    chunk,
                    decoded: None,
                });
                // Idle means no data while waiting for it: a chunk that
                // took longer than the idle timeout to count does not
                // make the source idle.
                ingest.pipeline().source_active(now_ms());
                Ok(Pumped::Data)
            }
            Err(RecvTimeoutError::Timeout) => Ok(Pumped::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(Pumped::End),
        }
    }
}
