//! Why a hub cannot be created or written, and the one fix, from the broker's answer: its
//! Kafka error code first, then the words Event Hubs puts in the message (docs/eventhubs.md
//! "When a hub is refused"). An answer nothing here knows stays "unclassified", with the
//! broker's own words.

use std::fmt;

use rdkafka::error::RDKafkaErrorCode as C;

/// The causes an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The hub does not exist and hubgate may not create it (`provisioning = "precreated"`).
    Missing,
    /// The hub does not exist yet and hubgate is creating it (`provisioning = "auto"`).
    Creating,
    /// Creating the hub was refused for want of rights: a Send-only or Listen-only key.
    NoManage,
    /// Writing was refused: a Listen-only key, or a Basic-tier namespace (no Kafka endpoint;
    /// it answers every topic with an authorization error, so the two look alike).
    ListenOnly,
    /// The broker says the tier does not allow it (Basic).
    BasicTier,
    /// The namespace holds as many hubs as its tier allows.
    HubCap,
    /// The connection string names a hub (`EntityPath`) and the key may be scoped to it.
    OtherHub(String),
    /// The partition count is outside what the tier allows.
    Partitions,
    /// The endpoint does not create hubs over Kafka (CreateTopics unsupported or refused by
    /// policy without a reason hubgate knows).
    CreateUnsupported,
    /// The hub exists but refused a record sent alone: its checks (`INVALID_RECORD`: a
    /// schema the broker validates) or a size limit. A hub that refuses every record
    /// hubgate sends is parked; a record refused again after the hub took a later one is
    /// dead-lettered.
    RefusesRecords,
    /// None of the above: the broker's words say what happened.
    Unclassified,
}

/// A hub refused: what, why, the fix, and what the broker said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub hub: String,
    pub cause: Cause,
    /// The broker's words (error code and message).
    pub broker: String,
    /// The partition count hubgate asked for, named in the fixes that create the hub.
    pub partitions: u16,
    /// A plain Kafka broker's topic rather than an Event Hub: the fixes name the broker's
    /// rights, not the portal's.
    pub kafka: bool,
}

impl Refusal {
    /// The cause as a metric label.
    pub fn kind(&self) -> &'static str {
        match self.cause {
            Cause::Missing => "missing",
            Cause::Creating => "creating",
            Cause::NoManage => "no_manage",
            Cause::ListenOnly => "listen_only",
            Cause::BasicTier => "basic_tier",
            Cause::HubCap => "hub_cap",
            Cause::OtherHub(_) => "other_hub",
            Cause::Partitions => "partitions",
            Cause::CreateUnsupported => "create_unsupported",
            Cause::RefusesRecords => "refuses_records",
            Cause::Unclassified => "unclassified",
        }
    }

    /// What is wrong, in a few words.
    pub fn what(&self) -> String {
        let hub = &self.hub;
        let noun = if self.kafka { "topic" } else { "hub" };
        match &self.cause {
            Cause::Missing => format!("{noun} {hub:?} does not exist"),
            Cause::Creating => format!("{noun} {hub:?} does not exist yet"),
            Cause::NoManage if self.kafka => format!("topic {hub:?} does not exist and this user may not create it"),
            Cause::NoManage => format!("hub {hub:?} does not exist and this key may not create it (no Manage right)"),
            Cause::ListenOnly if self.kafka => format!("topic {hub:?} refuses writes from this user"),
            Cause::ListenOnly => format!("hub {hub:?} refuses writes with this key (a Listen-only key, or a Basic-tier namespace)"),
            Cause::BasicTier => format!("{noun} {hub:?} cannot be used: the namespace is Basic tier"),
            Cause::HubCap => format!("{noun} {hub:?} cannot be created: the namespace holds as many hubs as its tier allows"),
            Cause::OtherHub(scope) => format!("{noun} {hub:?} refuses this key, which may be scoped to hub {scope:?} (EntityPath)"),
            Cause::Partitions => format!("{noun} {hub:?} cannot be created with {} partitions", self.partitions),
            Cause::CreateUnsupported => format!("{noun} {hub:?} does not exist and the endpoint would not create it"),
            Cause::RefusesRecords => format!("{noun} {hub:?} refuses hubgate's records (its record checks or size limit)"),
            Cause::Unclassified => format!("{noun} {hub:?} refused, unclassified"),
        }
    }

    /// The one thing to do about it.
    pub fn fix(&self) -> String {
        let (hub, n) = (&self.hub, self.partitions);
        match &self.cause {
            Cause::Missing if self.kafka => format!(
                "create topic {hub:?} ({n} partitions) on the broker, or set provisioning = \"auto\" with a user the broker lets create topics"
            ),
            Cause::Missing => format!(
                "create hub {hub:?} ({n} partitions) in the portal, or set provisioning = \"auto\" with a key that has Manage"
            ),
            Cause::NoManage if self.kafka => format!(
                "let this user create topics on the broker (its CREATE right), or create topic {hub:?} ({n} partitions) there"
            ),
            Cause::NoManage => format!(
                "use the connection string of a namespace-level policy with Manage, or create hub {hub:?} ({n} partitions) in the portal"
            ),
            Cause::Creating => "none: hubgate creates it (provisioning = \"auto\"); if this stays, `hubgate doctor` says why".into(),
            Cause::ListenOnly if self.kafka => format!("let this user write to topic {hub:?} on the broker (its WRITE right)"),
            Cause::ListenOnly => "use a namespace-level policy with Send (or Manage); if it has one already, the namespace is Basic tier: move it to Standard or higher".into(),
            Cause::BasicTier => "move the namespace to Standard or higher (Basic has no Kafka endpoint)".into(),
            Cause::HubCap => "map recTypes onto fewer hubs with [sink.hubs], use a second namespace, or move to Premium (Standard allows 10 hubs)".into(),
            Cause::OtherHub(scope) => format!(
                "use the connection string of a namespace-level policy (no EntityPath), or set hub_mode = \"single\" to send every recType to hub {scope:?}"
            ),
            Cause::Partitions if self.kafka => "lower partitions to a count the broker allows".into(),
            Cause::Partitions => "lower partitions (Standard allows 1-32)".into(),
            Cause::CreateUnsupported if self.kafka => format!("create topic {hub:?} ({n} partitions) on the broker"),
            Cause::CreateUnsupported => format!(
                "create hub {hub:?} ({n} partitions) in the portal (a Basic-tier namespace has no Kafka endpoint at all: move it to Standard)"
            ),
            Cause::RefusesRecords if self.kafka => format!(
                "let topic {hub:?} take hubgate's JSON records: lift its record validation (a schema the broker checks) or raise its max.message.bytes; its records are kept meanwhile, and one it refuses again after taking a later record is dead-lettered"
            ),
            Cause::RefusesRecords => "see the broker's words (Event Hubs takes events up to 1 MB on Standard); its records are kept meanwhile, and one it refuses again after taking a later record is dead-lettered".into(),
            Cause::Unclassified => "see the broker's words; `hubgate doctor` tries a write and says more".into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (broker: {})",
            self.what(),
            self.fix(),
            self.broker
        )
    }
}

/// What the broker's words say where its code does not (Event Hubs' own texts: the hub cap
/// is its 403 with `SubCode=40300`, the claims it names are its rights).
fn by_words(text: &str) -> Option<Cause> {
    let t = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&[
        "subcode=40300",
        "maximum number of eventhubs",
        "maximum number of event hubs",
        "resources of type eventhub",
    ]) {
        Some(Cause::HubCap)
    } else if has(&["basic tier", "basic sku", "tier does not support"]) {
        Some(Cause::BasicTier)
    } else if has(&["'manage'", "manage claim", "manage,"]) {
        Some(Cause::NoManage)
    } else if has(&["'send'", "send claim"]) {
        Some(Cause::ListenOnly)
    } else {
        None
    }
}

/// Whether an answer to CreateTopics only says "not now" (a timeout, a broker moving its
/// controller, Event Hubs' "unable to process the request" when it is busy): no answer
/// about the hub, which is asked about again.
pub fn transient(code: C, text: &str) -> bool {
    matches!(
        code,
        C::RequestTimedOut | C::NotController | C::OperationTimedOut
    ) || text.to_ascii_lowercase().contains("unable to process")
}

/// What the broker's answers are read against: the connection string's `EntityPath`, the
/// partition count hubgate creates hubs with, whether it creates them at all, and whether
/// the broker is a plain Kafka one (topics) rather than Event Hubs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    pub entity_path: Option<String>,
    pub partitions: u16,
    pub auto: bool,
    pub kafka: bool,
}

impl Setup {
    /// The broker's answer to creating `hub`; `None` when the hub exists now.
    pub fn on_create(&self, code: C, text: &str, hub: &str) -> Option<Refusal> {
        if matches!(code, C::NoError | C::TopicAlreadyExists) {
            return None;
        }
        // Codes that say it all first; the words refine the rest.
        let cause = match code {
            C::InvalidPartitions => Cause::Partitions,
            C::UnsupportedVersion | C::UnsupportedFeature => Cause::CreateUnsupported,
            C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => {
                by_words(text).unwrap_or(self.scoped_elsewhere(hub, Cause::NoManage))
            }
            C::PolicyViolation | C::InvalidRequest | C::InvalidConfig => {
                by_words(text).unwrap_or(Cause::CreateUnsupported)
            }
            _ => by_words(text).unwrap_or(Cause::Unclassified),
        };
        Some(self.refusal(hub, cause, code, text))
    }

    /// The broker's answer to a write to `hub` that failed; `None` for failures that are
    /// not the hub's (transport, throttling).
    pub fn on_produce(&self, code: C, text: &str, hub: &str) -> Option<Refusal> {
        let cause = match code {
            C::TopicAuthorizationFailed => {
                by_words(text).unwrap_or(self.scoped_elsewhere(hub, Cause::ListenOnly))
            }
            C::UnknownTopic | C::UnknownTopicOrPartition if self.auto => Cause::Creating,
            C::UnknownTopic | C::UnknownTopicOrPartition => Cause::Missing,
            _ => return None,
        };
        Some(self.refusal(hub, cause, code, text))
    }

    /// `hub` refused a record sent alone with `code` ([`Cause::RefusesRecords`]).
    pub fn refuses_records(&self, code: C, text: &str, hub: &str) -> Refusal {
        self.refusal(hub, Cause::RefusesRecords, code, text)
    }

    /// A hub (not `hub`) named by `EntityPath` may be all this key can use; else `otherwise`.
    fn scoped_elsewhere(&self, hub: &str, otherwise: Cause) -> Cause {
        match &self.entity_path {
            Some(scope) if scope != hub => Cause::OtherHub(scope.clone()),
            _ => otherwise,
        }
    }

    /// `hub` does not exist and is not created here.
    pub fn missing(&self, hub: &str) -> Refusal {
        Refusal {
            hub: hub.to_string(),
            cause: Cause::Missing,
            broker: "not among those the broker lists".into(),
            partitions: self.partitions,
            kafka: self.kafka,
        }
    }

    /// CreateTopics was answered, but not for `hub`.
    pub fn unanswered(&self, hub: &str) -> Refusal {
        Refusal {
            hub: hub.to_string(),
            cause: Cause::Unclassified,
            broker: "no answer for this hub in the CreateTopics response".into(),
            partitions: self.partitions,
            kafka: self.kafka,
        }
    }

    fn refusal(&self, hub: &str, cause: Cause, code: C, text: &str) -> Refusal {
        let words = text.trim();
        let broker = if words.is_empty() || words == code.to_string() {
            format!("{code:?}")
        } else {
            format!("{code:?}: {words}")
        };
        Refusal {
            hub: hub.to_string(),
            cause,
            broker,
            partitions: self.partitions,
            kafka: self.kafka,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(ep: Option<&str>) -> Setup {
        Setup {
            entity_path: ep.map(str::to_string),
            partitions: 4,
            auto: true,
            kafka: false,
        }
    }

    fn create(code: C, text: &str, ep: Option<&str>) -> Option<Cause> {
        setup(ep)
            .on_create(code, text, "io.microshare.motion.unpacked")
            .map(|r| r.cause)
    }

    fn produce(code: C, text: &str, ep: Option<&str>) -> Option<Cause> {
        setup(ep)
            .on_produce(code, text, "io.microshare.motion.unpacked")
            .map(|r| r.cause)
    }

    #[test]
    fn creation_answers_map_to_causes() {
        assert_eq!(create(C::NoError, "", None), None);
        assert_eq!(create(C::TopicAlreadyExists, "exists", None), None);
        assert_eq!(
            create(C::TopicAuthorizationFailed, "", None),
            Some(Cause::NoManage)
        );
        assert_eq!(
            create(C::ClusterAuthorizationFailed, "", Some("yourchoice")),
            Some(Cause::OtherHub("yourchoice".into()))
        );
        assert_eq!(
            create(
                C::PolicyViolation,
                "error code: 403, Details: SubCode=40300. The maximum number of EventHubs allowed for the namespace has been reached",
                Some("yourchoice")
            ),
            Some(Cause::HubCap)
        );
        assert_eq!(
            create(C::PolicyViolation, "not supported in the Basic tier", None),
            Some(Cause::BasicTier)
        );
        assert_eq!(
            create(
                C::PolicyViolation,
                "Request parameters do not satisfy the configured policy.",
                None
            ),
            Some(Cause::CreateUnsupported)
        );
        assert_eq!(
            create(C::UnsupportedVersion, "", None),
            Some(Cause::CreateUnsupported)
        );
        assert_eq!(
            create(C::InvalidPartitions, "", None),
            Some(Cause::Partitions)
        );
        // The code says it: a limit in the words is the partitions' one, not the hub cap.
        assert_eq!(
            create(
                C::InvalidPartitions,
                "Number of partitions exceeds the maximum number allowed (quota)",
                None
            ),
            Some(Cause::Partitions)
        );
        // Words that merely sound like the hub cap are not Event Hubs' marker for it.
        assert_eq!(
            create(C::PolicyViolation, "quota of requests per second", None),
            Some(Cause::CreateUnsupported)
        );
        assert_eq!(
            create(C::UnsupportedFeature, "CreateTopics not supported", None),
            Some(Cause::CreateUnsupported)
        );
        assert_eq!(
            create(
                C::TopicAuthorizationFailed,
                "Unauthorized access. 'Manage','EntityWrite' claim(s) are required",
                Some("x")
            ),
            Some(Cause::NoManage)
        );
        assert_eq!(
            create(C::NotController, "odd", None),
            Some(Cause::Unclassified)
        );
    }

    #[test]
    fn write_answers_map_to_causes() {
        assert_eq!(
            produce(C::TopicAuthorizationFailed, "", None),
            Some(Cause::ListenOnly)
        );
        assert_eq!(
            produce(C::TopicAuthorizationFailed, "", Some("other")),
            Some(Cause::OtherHub("other".into()))
        );
        // A key scoped to this very hub that still may not write: not a scope problem.
        assert_eq!(
            setup(Some("h"))
                .on_produce(C::TopicAuthorizationFailed, "", "h")
                .map(|r| r.cause),
            Some(Cause::ListenOnly)
        );
        assert_eq!(
            produce(
                C::TopicAuthorizationFailed,
                "Unauthorized access. 'Send' claim(s) are required",
                Some("other")
            ),
            Some(Cause::ListenOnly)
        );
        assert_eq!(
            produce(C::UnknownTopicOrPartition, "", None),
            Some(Cause::Creating)
        );
        let precreated = Setup::default();
        assert_eq!(
            precreated
                .on_produce(C::UnknownTopic, "", "h")
                .map(|r| r.cause),
            Some(Cause::Missing)
        );
        assert_eq!(produce(C::RequestTimedOut, "", None), None);
    }

    #[test]
    fn not_now_is_no_answer() {
        assert!(transient(C::RequestTimedOut, ""));
        assert!(transient(C::NotController, ""));
        assert!(transient(
            C::Unknown,
            "The service was unable to process the request; please retry"
        ));
        assert!(!transient(C::TopicAuthorizationFailed, ""));
        assert!(!transient(C::PolicyViolation, "SubCode=40300"));
    }

    #[test]
    fn an_unknown_answer_keeps_the_brokers_words() {
        let r = setup(None)
            .on_create(C::NotController, "the broker's own words", "h")
            .unwrap();
        assert_eq!(r.kind(), "unclassified");
        assert!(r.to_string().contains("unclassified"), "{r}");
        assert!(
            r.to_string()
                .ends_with("(broker: NotController: the broker's own words)"),
            "{r}"
        );
    }

    #[test]
    fn each_cause_names_the_hub_and_one_fix() {
        for (code, text) in [
            (C::TopicAuthorizationFailed, ""),
            (C::PolicyViolation, "SubCode=40300"),
            (C::PolicyViolation, "basic tier"),
            (C::InvalidPartitions, ""),
            (C::PolicyViolation, ""),
        ] {
            let r = setup(None).on_create(code, text, "hub-a").unwrap();
            let line = r.to_string();
            assert!(line.contains("\"hub-a\""), "{line}");
            assert!(!r.fix().is_empty(), "{line}");
        }
    }

    #[test]
    fn a_kafka_brokers_refusals_name_topics_and_the_brokers_rights() {
        let kafka = Setup {
            kafka: true,
            auto: false,
            ..setup(None)
        };
        let missing = kafka
            .on_produce(C::UnknownTopicOrPartition, "", "t")
            .unwrap();
        let create = Setup {
            auto: true,
            ..kafka.clone()
        }
        .on_create(C::TopicAuthorizationFailed, "", "t")
        .unwrap();
        let write = kafka
            .on_produce(C::TopicAuthorizationFailed, "", "t")
            .unwrap();
        let lines = [missing, create, write, kafka.missing("t")].map(|r| r.to_string());
        for line in &lines {
            assert!(line.starts_with("topic \"t\" "), "{line}");
            for eventhubs in ["portal", "Manage", "namespace", "key"] {
                assert!(!line.contains(eventhubs), "{line}");
            }
        }
        assert!(
            lines[0].contains("create topic \"t\" (4 partitions) on the broker"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("CREATE right"), "{}", lines[1]);
        assert!(lines[2].contains("WRITE right"), "{}", lines[2]);
        let hub = setup(None).missing("t").to_string();
        assert!(hub.contains("in the portal"), "{hub}");
    }
}
