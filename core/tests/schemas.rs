//! Schemas and upcasting (SPEC 7): registration and its compatibility check, hop-by-hop
//! upcasting on delivery and replay to the version each reader asks for, events newer than
//! asked (marked, or refused when strict), payloads that cannot be upcast, and the property
//! that upcasting 1 -> 3 equals 1 -> 2 -> 3.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use tributary_core::*;

const STREAM: &str = "users";

fn v1_schema() -> Value {
    json!({"type": "object", "required": ["id", "name"],
           "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}})
}

fn v2() -> SchemaRegistration {
    SchemaRegistration {
        event_type: "user".into(),
        version: 2,
        schema: Some(json!({"type": "object", "required": ["id", "full_name", "email"]})),
        rules: vec![
            Rule::Rename {
                from: "name".into(),
                to: "full_name".into(),
            },
            Rule::Add {
                field: "email".into(),
                default: json!("unknown"),
            },
        ],
    }
}

fn v3() -> SchemaRegistration {
    SchemaRegistration {
        event_type: "user".into(),
        version: 3,
        schema: Some(json!({"type": "object", "required": ["id", "full_name", "contact"]})),
        rules: vec![
            Rule::Copy {
                from: "email".into(),
                to: "contact.email".into(),
            },
            Rule::Remove {
                field: "email".into(),
            },
            Rule::Set {
                field: "kind".into(),
                value: json!("person"),
            },
        ],
    }
}

fn register(h: &mut Harness, reg: SchemaRegistration) -> Result<Reply, Error> {
    h.cmd(Command::RegisterSchema(reg))
}

fn setup() -> Harness {
    let mut h = Harness::new();
    h.create_persistent(STREAM, 1);
    let v1 = SchemaRegistration {
        event_type: "user".into(),
        version: 1,
        schema: Some(v1_schema()),
        rules: vec![],
    };
    assert_eq!(register(&mut h, v1), Ok(Reply::Done));
    assert_eq!(register(&mut h, v2()), Ok(Reply::Done));
    assert_eq!(register(&mut h, v3()), Ok(Reply::Done));
    h
}

fn user(version: u32, doc: Value) -> NewEvent {
    let mut e = NewEvent::new("user", serde_json::to_vec(&doc).unwrap());
    e.schema_version = version;
    e
}

fn payload(e: &Event) -> Value {
    serde_json::from_slice(&e.payload).unwrap()
}

fn subscribe_at(h: &mut Harness, name: &str, version: Option<u32>, strict: bool) {
    let mut c = h.sub_config(STREAM, name, SubscriptionMode::Exclusive);
    if let Some(v) = version {
        c.schema_versions.insert("user".into(), v);
    }
    c.strict_versions = strict;
    h.subscribe(c);
    h.attach(1, STREAM, name, "c", None);
}

#[test]
fn delivery_upcasts_hop_by_hop_to_the_latest_by_default() {
    let mut h = setup();
    subscribe_at(&mut h, "latest", None, false);
    h.append(
        STREAM,
        vec![
            user(1, json!({"id": 1, "name": "Ada"})),
            user(2, json!({"id": 2, "full_name": "Bo", "email": "b@x"})),
            user(
                3,
                json!({"id": 3, "full_name": "Cy", "contact": {}, "kind": "person"}),
            ),
        ],
    )
    .unwrap();
    let d = h.delivered_events("c");
    assert_eq!(d.len(), 3);
    assert!(d.iter().all(|d| d.event.schema_version == 3));
    assert_eq!(
        payload(&d[0].event),
        json!({"id": 1, "full_name": "Ada", "contact": {"email": "unknown"}, "kind": "person"})
    );
    assert_eq!(
        payload(&d[1].event),
        json!({"id": 2, "full_name": "Bo", "contact": {"email": "b@x"}, "kind": "person"})
    );
    // Stored bytes never change.
    let stored = h.read(STREAM, 0, 0, 3).unwrap();
    assert_eq!(stored[0].schema_version, 1);
    assert_eq!(payload(&stored[0]), json!({"id": 1, "name": "Ada"}));
}

#[test]
fn an_event_newer_than_asked_is_marked_or_refused_when_strict() {
    let mut h = setup();
    subscribe_at(&mut h, "v2", Some(2), false);
    h.append(
        STREAM,
        vec![
            user(1, json!({"id": 1, "name": "Ada"})),
            user(3, json!({"id": 3, "full_name": "Cy", "contact": {}})),
        ],
    )
    .unwrap();
    let d = h.delivered_events("c");
    assert_eq!(d[0].event.schema_version, 2);
    assert_eq!(
        payload(&d[0].event),
        json!({"id": 1, "full_name": "Ada", "email": "unknown"})
    );
    assert_eq!(d[1].event.schema_version, 3, "unchanged");
    assert_eq!(
        d[1].event
            .headers
            .get(NEWER_THAN_REQUESTED)
            .map(String::as_str),
        Some("2")
    );
    // Strict: the newer event is not delivered; it goes to the dead letter stream.
    h.cmd_on(
        1,
        Command::Detach {
            stream: s(STREAM),
            subscription: sub("v2"),
            consumer: c("c"),
        },
    )
    .unwrap();
    subscribe_at(&mut h, "strict", Some(2), true);
    let d = h.delivered_events("c");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].event.offset, 0);
    let dead = h.read("users.dlq", 0, 0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].headers["x-last-error"].contains("newer than the version 2"));
    let cursor = &h.describe_sub(STREAM, "strict").cursors[0];
    assert_eq!(
        (cursor.next.clone(), cursor.pending),
        (vec![2], 1),
        "the refused event is settled for the subscription; only offset 0 is pending"
    );
}

#[test]
fn replay_upcasts_to_the_version_it_asks_for() {
    let mut h = setup();
    h.append(
        STREAM,
        vec![
            user(1, json!({"id": 1, "name": "Ada"})),
            user(3, json!({"id": 3, "full_name": "Cy", "contact": {}})),
        ],
    )
    .unwrap();
    let mut options = ReplayOptions::default();
    options.schema_versions.insert("user".into(), 2);
    options.strict_versions = true;
    let r = h.cmd(Command::Replay {
        stream: s(STREAM),
        from: ReplayFrom::Offset(0),
        options,
    });
    assert!(matches!(r, Ok(Reply::ReplayStarted(_))));
    let events: Vec<Arc<Event>> = h
        .replay_items()
        .into_iter()
        .flat_map(|i| match i {
            ReplayItem::Events(e) => e,
            _ => vec![],
        })
        .collect();
    assert_eq!(events.len(), 1, "strict: the v3 event is left out");
    assert_eq!(events[0].schema_version, 2);
    assert_eq!(
        payload(&events[0]),
        json!({"id": 1, "full_name": "Ada", "email": "unknown"})
    );
}

#[test]
fn payloads_that_cannot_be_upcast_go_unchanged() {
    let mut h = setup();
    subscribe_at(&mut h, "latest", None, false);
    let mut text = NewEvent::new("user", b"plain text".to_vec());
    text.content_type = "text/plain".into();
    let broken = NewEvent::new("user", b"{not json".to_vec());
    h.append(STREAM, vec![text, broken]).unwrap();
    let d = h.delivered_events("c");
    assert_eq!(d[0].event.schema_version, 1);
    assert_eq!(&d[0].event.payload[..], b"plain text");
    assert!(!d[0].event.headers.contains_key(UPCAST_ERROR));
    assert_eq!(d[1].event.schema_version, 1);
    assert!(d[1].event.headers[UPCAST_ERROR].contains("not JSON"));
}

#[test]
fn registration_is_refused_unless_next_and_compatible() {
    let mut h = setup();
    let r = register(&mut h, SchemaRegistration { version: 5, ..v3() });
    assert!(matches!(
        &r,
        Err(Error::SchemaVersionConflict { version: 5, reason, .. }) if reason.contains("next is 4")
    ));
    let v4 = SchemaRegistration {
        event_type: "user".into(),
        version: 4,
        schema: Some(json!({"type": "object", "required": ["id", "full_name", "contact"]})),
        rules: vec![Rule::Remove {
            field: "full_name".into(),
        }],
    };
    match register(&mut h, v4) {
        Err(Error::SchemaIncompatible { field, version, .. }) => {
            assert_eq!((field.as_str(), version), ("full_name", 4));
        }
        other => panic!("{other:?}"),
    }
    let Ok(Reply::Schemas(list)) = h.cmd(Command::ListSchemas) else {
        panic!("list")
    };
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].versions.len(),
        3,
        "nothing registered by the refusals"
    );
    assert_eq!(list[0].versions[1].rules, v2().rules);
}

#[test]
fn a_rust_function_upcaster_serves_delivery() {
    let mut h = Harness::new();
    h.create_persistent(STREAM, 1);
    let schema = schema_of::<V1>();
    h.engine
        .register_schema(SchemaRegistration {
            event_type: "temp".into(),
            version: 1,
            schema: Some(schema),
            rules: vec![],
        })
        .unwrap();
    let to_kelvin: UpcastFn = Arc::new(|mut v: Value| {
        let c = v["celsius"].as_f64().ok_or("no celsius")?;
        v["kelvin"] = json!(c + 273.15);
        Ok(v)
    });
    let v2_schema = json!({"type": "object", "required": ["celsius", "kelvin"]});
    h.engine
        .register_schema_fn("temp", 2, Some(v2_schema), to_kelvin)
        .unwrap();
    let mut c = h.sub_config(STREAM, "q", SubscriptionMode::Exclusive);
    c.strict_versions = false;
    h.subscribe(c);
    h.attach(1, STREAM, "q", "c", None);
    let mut e = NewEvent::new("temp", br#"{"celsius": 20.0}"#.to_vec());
    e.schema_version = 1;
    h.append(STREAM, vec![e]).unwrap();
    let d = h.delivered_events("c");
    assert_eq!(payload(&d[0].event)["kelvin"], json!(293.15));
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct V1 {
    celsius: f64,
}

// ---- property: 1 -> 3 equals 1 -> 2 -> 3 ------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    const FIELDS: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn field() -> impl Strategy<Value = String> {
        (0..FIELDS.len()).prop_map(|i| FIELDS[i].to_string())
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
    }

    fn rule() -> impl Strategy<Value = Rule> {
        prop_oneof![
            (field(), field()).prop_map(|(from, to)| Rule::Rename { from, to }),
            (field(), value()).prop_map(|(field, default)| Rule::Add { field, default }),
            field().prop_map(|field| Rule::Remove { field }),
            (field(), value()).prop_map(|(field, value)| Rule::Set { field, value }),
            (field(), field()).prop_map(|(from, to)| Rule::Copy { from, to }),
        ]
    }

    /// A valid v1 document: "a" is required, the rest optional.
    fn doc() -> impl Strategy<Value = Value> {
        (
            value(),
            proptest::collection::btree_map(field(), value(), 0..4),
        )
            .prop_map(|(a, rest)| {
                let mut m: Map<String, Value> = rest.into_iter().collect();
                m.insert("a".into(), a);
                Value::Object(m)
            })
    }

    /// The rules of SPEC 7 on top-level fields, written independently of the engine.
    fn model(rules: &[Rule], doc: &Value) -> Value {
        let mut m = doc.as_object().cloned().unwrap_or_default();
        for r in rules {
            match r {
                Rule::Rename { from, to } => {
                    if let Some(v) = m.remove(from) {
                        m.insert(to.clone(), v);
                    }
                }
                Rule::Add { field, default } => {
                    m.entry(field.clone()).or_insert_with(|| default.clone());
                }
                Rule::Remove { field } => {
                    m.remove(field);
                }
                Rule::Set { field, value } => {
                    m.insert(field.clone(), value.clone());
                }
                Rule::Copy { from, to } => {
                    if let Some(v) = m.get(from).cloned() {
                        m.insert(to.clone(), v);
                    }
                }
            }
        }
        Value::Object(m)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn upcasting_1_to_3_equals_1_to_2_to_3(
            r2 in proptest::collection::vec(rule(), 0..5),
            r3 in proptest::collection::vec(rule(), 0..5),
            docs in proptest::collection::vec(doc(), 1..6),
        ) {
            let mut h = Harness::new();
            h.create_persistent(STREAM, 1);
            let reg = |version, rules| SchemaRegistration {
                event_type: "t".into(),
                version,
                schema: None,
                rules,
            };
            h.engine.register_schema(reg(1, vec![])).unwrap();
            h.engine.register_schema(reg(2, r2.clone())).unwrap();
            h.engine.register_schema(reg(3, r3.clone())).unwrap();
            for (name, version) in [("at3", 3u32), ("at2", 2)] {
                let mut c = h.sub_config(STREAM, name, SubscriptionMode::Broadcast);
                c.schema_versions.insert("t".into(), version);
                h.subscribe(c);
                h.attach(1, STREAM, name, name, None);
            }
            let events = docs
                .iter()
                .map(|d| NewEvent::new("t", serde_json::to_vec(d).unwrap()))
                .collect();
            h.append(STREAM, events).unwrap();
            let at3 = h.delivered_events("at3");
            let at2 = h.delivered_events("at2");
            prop_assert_eq!(at3.len(), docs.len());
            for ((d3, d2), doc) in at3.iter().zip(&at2).zip(&docs) {
                let direct = payload(&d3.event);
                let two_hops = h.engine.schemas().upcast_value("t", 2, 3, payload(&d2.event)).unwrap();
                prop_assert_eq!(&direct, &two_hops, "1 -> 3 differs from 1 -> 2 -> 3");
                prop_assert_eq!(&direct, &model(&r3, &model(&r2, doc)), "differs from the rules");
                prop_assert_eq!(d3.event.schema_version, 3);
                prop_assert_eq!(d2.event.schema_version, 2);
            }
        }
    }
}

fn list(h: &mut Harness) -> Vec<SchemaInfo> {
    match h.cmd(Command::ListSchemas) {
        Ok(Reply::Schemas(l)) => l,
        other => panic!("{other:?}"),
    }
}

#[test]
fn registered_versions_are_saved_and_survive_a_restart() {
    let mut h = setup();
    let before = list(&mut h);
    let mut h = h.restart();
    assert_eq!(list(&mut h), before, "the registry after a restart");
    // Deliveries use the recovered upcasters.
    subscribe_at(&mut h, "after", None, false);
    h.append(STREAM, vec![user(1, json!({"id": 1, "name": "Ada"}))])
        .unwrap();
    let d = h.delivered_events("c");
    assert_eq!(d[0].event.schema_version, 3);
    assert_eq!(
        payload(&d[0].event),
        json!({"id": 1, "full_name": "Ada", "contact": {"email": "unknown"}, "kind": "person"})
    );
    // The same version again changes nothing; other content for it is refused.
    assert_eq!(register(&mut h, v2()), Ok(Reply::Done));
    let r = register(
        &mut h,
        SchemaRegistration {
            rules: vec![],
            ..v2()
        },
    );
    assert!(
        matches!(r, Err(Error::SchemaVersionConflict { version: 2, .. })),
        "{r:?}"
    );
}

#[test]
fn a_registration_is_answered_only_once_saved_and_a_failed_save_is_repeated() {
    let mut h = Harness::new();
    h.hold_storage = true;
    let v1 = SchemaRegistration {
        event_type: "user".into(),
        version: 1,
        schema: Some(v1_schema()),
        rules: vec![],
    };
    let r1 = h.send(1, Command::RegisterSchema(v1));
    let r2 = h.send(1, Command::RegisterSchema(v2()));
    h.pump();
    assert_eq!(h.reply(r1), None, "not answered before the save");
    assert_eq!(h.held.len(), 2);
    // The second save carries version 1 too (not known saved yet).
    assert!(matches!(&h.held[1].1, StorageRequest::SaveSchemas(l) if l.len() == 2));
    // The first save fails: version 1 waits for its repeat; the second commits both.
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("down".into()))),
    );
    h.complete(0, None);
    h.pump();
    assert_eq!(h.reply(r2), Some(Ok(Reply::Done)));
    assert_eq!(
        h.reply(r1),
        None,
        "its own save is repeated after a back-off"
    );
    h.hold_storage = false;
    h.advance(std::time::Duration::from_secs(10));
    assert_eq!(h.reply(r1), Some(Ok(Reply::Done)));
    let h = h.restart();
    assert_eq!(h.engine.schemas().latest("user"), 2);
}

#[test]
fn a_function_upcaster_is_restored_missing_until_registered_again() {
    let mut h = Harness::new();
    h.create_persistent(STREAM, 1);
    let v1 = SchemaRegistration {
        event_type: "temp".into(),
        version: 1,
        schema: None,
        rules: vec![],
    };
    assert_eq!(register(&mut h, v1), Ok(Reply::Done));
    let double: UpcastFn = Arc::new(|mut v: Value| {
        let n = v["n"].as_i64().ok_or("no n")?;
        v["double"] = json!(n * 2);
        Ok(v)
    });
    h.engine
        .register_schema_fn("temp", 2, None, double.clone())
        .unwrap();
    h.pump();
    let mut h = h.restart();
    let listed = list(&mut h);
    assert!(listed[0].versions[1].function, "{listed:?}");
    let mut c = h.sub_config(STREAM, "q", SubscriptionMode::Exclusive);
    c.strict_versions = false;
    h.subscribe(c);
    h.attach(1, STREAM, "q", "c", None);
    let mut e = NewEvent::new("temp", br#"{"n": 4}"#.to_vec());
    e.schema_version = 1;
    h.append(STREAM, vec![e.clone()]).unwrap();
    let d = h.delivered_events("c");
    assert_eq!(d[0].event.schema_version, 1);
    assert!(
        d[0].event.headers[UPCAST_ERROR].contains("not registered again"),
        "{:?}",
        d[0].event.headers
    );
    h.engine
        .register_schema_fn("temp", 2, None, double)
        .unwrap();
    h.append(STREAM, vec![e]).unwrap();
    let d = h.delivered_events("c");
    assert_eq!(d[0].event.schema_version, 2);
    assert_eq!(payload(&d[0].event), json!({"n": 4, "double": 8}));
}
