//! Crash durability under load: clients stream writes, the server is killed
//! with SIGKILL at a random moment, and after a restart every write that was
//! acknowledged with a 201 is there. Repeated on one store, so it also opens
//! cleanly after several crashes in a row.

use crate::support::{Berth, data_dir, parse_reply};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ROUNDS: usize = 4;
const WRITERS: usize = 4;

/// xorshift64*: enough randomness to pick kill moments, and reproducible
/// from the seed the test prints (set BERTH_CRASH_SEED to replay one).
struct Rng(u64);

impl Rng {
    fn from_env_or_time() -> Rng {
        let seed = std::env::var("BERTH_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("crash test seed: {seed} (replay with BERTH_CRASH_SEED={seed})");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// POST a user; `Some(id)` only for a complete 201 answer. Any failure
/// (refused, reset, cut short) is `None`: the write may or may not be there.
fn create(addr: SocketAddr, name: &str) -> Option<u64> {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let raw = format!(
        "POST /users HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(raw.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    if !response.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let reply = parse_reply(&response);
    if reply.status != 201 {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    (value["name"] == name).then(|| value["id"].as_u64())?
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let mut rng = Rng::from_env_or_time();
    let dir = data_dir();
    // Every acknowledged write so far, by id, across all rounds.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let berth = Berth::start(dir.path());
        // The store opened cleanly and holds everything acknowledged before.
        check_all_present(&berth, &acknowledged, round);

        let addr = berth.addr;
        let kill_after = Duration::from_millis(50 + rng.below(750));
        let stop = AtomicBool::new(false);
        let acked: Vec<(u64, String)> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let stop = &stop;
                    scope.spawn(move || {
                        let mut acked = Vec::new();
                        let give_up = Instant::now() + Duration::from_secs(60);
                        for i in 0..100_000 {
                            let name = format!("r{round}-w{w}-{i}");
                            match create(addr, &name) {
                                Some(id) => acked.push((id, name)),
                                // Once the server is gone nothing more gets in.
                                None if stop.load(Ordering::SeqCst) => break,
                                None => {}
                            }
                            if Instant::now() > give_up {
                                break;
                            }
                        }
                        acked
                    })
                })
                .collect();
            std::thread::sleep(kill_after);
            berth.kill();
            stop.store(true, Ordering::SeqCst);
            writers
                .into_iter()
                .flat_map(|w| w.join().expect("writer thread"))
                .collect()
        });
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} writes acknowledged",
            acked.len()
        );
        for (id, name) in acked {
            assert!(
                acknowledged.insert(id, name).is_none(),
                "id {id} was acknowledged twice"
            );
        }
    }
    let berth = Berth::start(dir.path());
    check_all_present(&berth, &acknowledged, ROUNDS);
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged in any round"
    );
    // And the restarted store still takes writes.
    assert_eq!(berth.post("/users", r#"{"name":"after"}"#).status, 201);
}

/// Every acknowledged user is listed with the name it was created with.
fn check_all_present(berth: &Berth, acknowledged: &BTreeMap<u64, String>, round: usize) {
    let listed: BTreeMap<u64, String> = berth
        .list_all("/users")
        .iter()
        .map(|u| {
            (
                u["id"].as_u64().unwrap(),
                u["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, name) in acknowledged {
        assert_eq!(
            listed.get(id),
            Some(name),
            "user {id} ({name}) was acknowledged but is missing after crash {round}"
        );
    }
    // Spot-check single reads too, which go through a different path.
    for (id, name) in acknowledged.iter().step_by(25) {
        let one = berth.get(&format!("/users/{id}"));
        assert_eq!(one.status, 200);
        assert_eq!(one.json()["name"], name.as_str());
    }
}
