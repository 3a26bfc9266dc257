//! Watch streams recorded during the run: each watches every key from revision 1 and, when
//! its stream breaks (member killed, stream ended), resumes on the next member from the
//! revision after the last one it received — exactly what a careful etcd client does. The
//! concatenation must then be the store's event log, gap- and duplicate-free.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::checker::WatchEvent;
use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::workload::{connect, OP_TIMEOUT};

pub struct Watcher {
    pub name: String,
    pub events: Arc<Mutex<Vec<WatchEvent>>>,
    /// The highest revision received so far.
    pub last: Arc<AtomicI64>,
    /// How many times the stream was (re)established.
    pub sessions: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub fn convert(e: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = e.kv()?;
    let put = e.event_type() == EventType::Put;
    Some(WatchEvent {
        revision: kv.mod_revision(),
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: put.then(|| String::from_utf8_lossy(kv.value()).into_owned()),
        create_revision: if put { kv.create_revision() } else { 0 },
        version: if put { kv.version() } else { 0 },
    })
}

impl Watcher {
    pub fn spawn(name: String, endpoints: Vec<String>, first_member: usize) -> Watcher {
        let events: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
        let last = Arc::new(AtomicI64::new(0));
        let sessions = Arc::new(AtomicI64::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let task = {
            let (events, last, sessions) = (events.clone(), last.clone(), sessions.clone());
            tokio::spawn(async move {
                let mut member = first_member;
                while !*stopped.borrow() {
                    let endpoint = &endpoints[member % endpoints.len()];
                    member += 1;
                    let Some(mut client) = connect(endpoint).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let start = last.load(Ordering::SeqCst) + 1;
                    let options = WatchOptions::new()
                        .with_all_keys()
                        .with_start_revision(start);
                    let Ok(Ok(mut stream)) =
                        tokio::time::timeout(OP_TIMEOUT, client.watch("", Some(options))).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    sessions.fetch_add(1, Ordering::SeqCst);
                    loop {
                        tokio::select! {
                            message = stream.message() => {
                                let Ok(Some(resp)) = message else { break };
                                if resp.canceled() {
                                    break;
                                }
                                let mut events = events.lock().unwrap();
                                for e in resp.events().iter().filter_map(convert) {
                                    last.fetch_max(e.revision, Ordering::SeqCst);
                                    events.push(e);
                                }
                            }
                            _ = stopped.changed() => return,
                        }
                    }
                }
            })
        };
        Watcher {
            name,
            events,
            last,
            sessions,
            stop,
            task,
        }
    }

    pub fn last(&self) -> i64 {
        self.last.load(Ordering::SeqCst)
    }

    pub async fn stop(self) -> Vec<WatchEvent> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.events.lock().unwrap().clone()
    }
}

/// The store's full event log up to `upto`, by a fresh watch from revision 1 on `endpoint`.
pub async fn full_log(endpoint: &str, upto: i64) -> Option<Vec<WatchEvent>> {
    let mut client = connect(endpoint).await?;
    let options = WatchOptions::new().with_all_keys().with_start_revision(1);
    let mut stream = client.watch("", Some(options)).await.ok()?;
    let mut log = Vec::new();
    let mut last = 0;
    while last < upto {
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .ok()?
            .ok()??;
        for e in resp.events().iter().filter_map(convert) {
            last = last.max(e.revision);
            log.push(e);
        }
    }
    Some(log)
}
