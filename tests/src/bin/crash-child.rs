//! The process the crash tests kill. It appends events with producer ids to the stream
//! `crash` as fast as it can, from several producers, and prints one line per acknowledged
//! event: `ACK <event id> <partition> <offset>`, flushed before the next append. Whatever it
//! printed must survive a SIGKILL at any moment.
//!
//! Usage: `crash-child STORE SEED` with STORE `sqlite:PATH` or `postgres:URL[#schema]`.

use std::io::Write;
use tributary_core::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(spec), Some(seed)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash-child sqlite:PATH|postgres:URL[#schema] SEED");
        std::process::exit(2);
    };
    let store = match tributary_tests::open_store(spec).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crash-child: {e}");
            std::process::exit(1);
        }
    };
    let handle = match tributary_tests::run_engine(store, Config::default(), seed) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("crash-child: {e}");
            std::process::exit(1);
        }
    };
    let stream = StreamName::new("crash").expect("a valid literal name");
    let mut config = StreamConfig::persistent(stream.clone());
    config.partitions = 3;
    match handle.call(ConnId(0), Command::CreateStream(config)).await {
        Ok(_) | Err(Error::StreamExists(_)) => {}
        Err(e) => {
            eprintln!("crash-child: create: {e}");
            std::process::exit(1);
        }
    }
    println!("READY");
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for producer in 0..8u64 {
        let (handle, stream, out) = (handle.clone(), stream.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0u64.. {
                let events: Vec<NewEvent> = (0..1 + n % 4)
                    .map(|i| {
                        let mut id = [0u8; 16];
                        id[..8].copy_from_slice(&seed.to_le_bytes());
                        id[8..12].copy_from_slice(&(producer as u32).to_le_bytes());
                        id[12..].copy_from_slice(&((n * 4 + i) as u32).to_le_bytes());
                        NewEvent::new("crash.test", vec![7u8; 64])
                            .with_id(EventId::from_bytes(id))
                            .with_key(id[8..].to_vec())
                    })
                    .collect();
                let ids: Vec<EventId> = events.iter().filter_map(|e| e.event_id).collect();
                let req = AppendRequest {
                    stream: stream.clone(),
                    events,
                    expected_offset: None,
                };
                match handle
                    .call(ConnId(producer + 1), Command::Append(req))
                    .await
                {
                    Ok(Reply::Appended(outcomes)) => {
                        let Ok(mut o) = out.lock() else { return };
                        for (id, outcome) in ids.iter().zip(outcomes) {
                            if let AppendOutcome::Appended(p) = outcome {
                                let _ = writeln!(o, "ACK {id} {} {}", p.partition, p.offset);
                            }
                        }
                        let _ = o.flush();
                    }
                    Ok(other) => eprintln!("crash-child: unexpected reply {other:?}"),
                    Err(e) => eprintln!("crash-child: append: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
