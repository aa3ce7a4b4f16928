//! The closed vocabularies of the two specifications, as enums: dataset (STIX and CTI) types,
//! traffic types, tags, IOC kinds, the CTI payload's openness and incentive mechanism, and the
//! hidden-danger levels and states. A value outside its vocabulary cannot be built; the wire
//! and the database keep the numbers and words the specifications give (serde reads and
//! writes those).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which observables of a dataset become indicators: the sources of its rows (a flow's source
/// address, a listed observable, a row's URL), of the types named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicatorRule {
    /// Only rows whose label names an attack (is not benign) show their sources acting
    /// maliciously; otherwise every row does.
    pub attack_rows_only: bool,
    /// The observable types that become indicators.
    pub types: Vec<IndicatorType>,
}

impl IndicatorRule {
    /// The rule narrowed to the types a request names (types outside the rule stay out).
    pub fn narrowed_to(&self, types: &[IndicatorType]) -> IndicatorRule {
        IndicatorRule {
            attack_rows_only: self.attack_rows_only,
            types: self
                .types
                .iter()
                .copied()
                .filter(|t| types.contains(t))
                .collect(),
        }
    }
}

/// A vocabulary known by number (for code generic over vocabularies, such as request parsing).
pub trait Numbered: Copy + Sized + 'static {
    /// Every member, in numeric order (the numbers are contiguous).
    const ALL: &'static [Self];
    fn number(self) -> u8;
    fn from_number(n: u64) -> Option<Self>;
}

/// A vocabulary known by word.
pub trait Worded: Copy + PartialEq + Sized + 'static {
    /// Every member, in the specification's order.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    /// The member with exactly this word.
    fn from_word(word: &str) -> Option<Self>;
    fn from_word_ignoring_case(word: &str) -> Option<Self>;
    /// Every word, for error messages: `a, b, c`.
    fn words() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An enum whose members the wire and the database know by number.
macro_rules! numbered {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $n:literal => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $n, )+
        }

        impl $name {
            /// Every member, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The number the specification gives it.
            pub fn number(self) -> u8 {
                self as u8
            }

            pub fn from_number(n: u64) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| u64::from(v.number()) == n)
            }

            /// The name the specification (or the front ends) show for it.
            pub fn label(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            /// The range of numbers, for error messages: `1-5`.
            pub fn range() -> String {
                let first = Self::ALL[0].number();
                let last = Self::ALL[Self::ALL.len() - 1].number();
                format!("{first}-{last}")
            }
        }

        impl Numbered for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn number(self) -> u8 {
                $name::number(self)
            }
            fn from_number(n: u64) -> Option<Self> {
                $name::from_number(n)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u8(self.number())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = u64::deserialize(d)?;
                Self::from_number(n).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{n} is not {} ({})",
                        $what,
                        Self::range()
                    ))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.number())
            }
        }
    };
}

/// An enum whose members the wire and the database know by word.
macro_rules! worded {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every member, in the specification's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word the specification gives it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }

            /// The member with exactly this word.
            pub fn from_word(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == word)
            }

            /// The member with this word, ignoring ASCII case.
            pub fn from_word_ignoring_case(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(word))
            }

            /// Every word, for error messages: `a, b, c`.
            pub fn words() -> String {
                <Self as Worded>::words()
            }
        }

        impl Worded for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn from_word(word: &str) -> Option<Self> {
                $name::from_word(word)
            }
            fn from_word_ignoring_case(word: &str) -> Option<Self> {
                $name::from_word_ignoring_case(word)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = std::borrow::Cow::<str>::deserialize(d)?;
                Self::from_word(&word).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{word:?} is not {} ({})",
                        $what,
                        Self::words()
                    ))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

numbered! {
    /// What a dataset holds: the data API's `stix_type`, and a CTI record's `cti_type`.
    pub enum DataType ("a data type") {
        MaliciousTraffic = 1 => "恶意流量",
        Honeypot = 2 => "蜜罐情报",
        Botnet = 3 => "僵尸网络",
        ApplicationAttack = 4 => "应用层攻击",
        OpenSource = 5 => "开源情报",
    }
}

impl DataType {
    /// Which observables a dataset of this type shows acting maliciously, unless a request
    /// says otherwise: in honeypot data every source that touched the honeypot; in botnet and
    /// application-attack data every flow's source; in malicious-traffic data the source of
    /// the rows whose label names an attack (not benign); in open-source intelligence every
    /// listed observable, URLs included.
    pub fn default_indicators(self) -> IndicatorRule {
        let addresses = vec![
            IndicatorType::Ipv4,
            IndicatorType::Ipv6,
            IndicatorType::Domain,
        ];
        match self {
            DataType::MaliciousTraffic => IndicatorRule {
                attack_rows_only: true,
                types: addresses,
            },
            DataType::Honeypot | DataType::Botnet | DataType::ApplicationAttack => IndicatorRule {
                attack_rows_only: false,
                types: addresses,
            },
            DataType::OpenSource => IndicatorRule {
                attack_rows_only: false,
                types: IndicatorType::ALL.to_vec(),
            },
        }
    }

    /// The tags a conversion records when the request names none.
    pub fn default_tags(self) -> Vec<Tag> {
        match self {
            DataType::Honeypot => vec![Tag::Honeypot],
            DataType::Botnet => vec![Tag::Botnet],
            _ => Vec::new(),
        }
    }
}

numbered! {
    /// `cti_traffic_type` of the chain payload: which network the traffic came from.
    pub enum TrafficType ("a traffic type") {
        NotTraffic = 0 => "not traffic",
        FiveG = 1 => "5g",
        Satellite = 2 => "satellite",
        Sdn = 3 => "sdn",
    }
}

impl TrafficType {
    /// The traffic type a dataset's tags imply (`5g`, `satellite`, `sdn`), else not traffic.
    pub fn from_tags(tags: &[Tag]) -> Self {
        [
            (Tag::FiveG, TrafficType::FiveG),
            (Tag::Satellite, TrafficType::Satellite),
            (Tag::Sdn, TrafficType::Sdn),
        ]
        .into_iter()
        .find(|(tag, _)| tags.contains(tag))
        .map(|(_, t)| t)
        .unwrap_or(TrafficType::NotTraffic)
    }
}

numbered! {
    /// `open_source` of the chain payload.
    pub enum OpenSource ("an open_source value") {
        Closed = 0 => "closed",
        Open = 1 => "open",
    }
}

numbered! {
    /// `incentive_mechanism` of the chain payload. The sharing chain defines the three
    /// mechanisms; the node only carries the number.
    pub enum IncentiveMechanism ("an incentive mechanism") {
        First = 1 => "1",
        Second = 2 => "2",
        Third = 3 => "3",
    }
}

numbered! {
    /// A hidden danger's `issueLevel`.
    pub enum IssueLevel ("an issue level") {
        Info = 0 => "信息",
        Low = 1 => "低危",
        Medium = 2 => "中危",
        High = 3 => "高危",
        Critical = 4 => "紧急",
    }
}

worded! {
    /// A dataset tag (`stix_tags`, `cti_tags`).
    pub enum Tag ("a tag") {
        Honeypot => "honeypot",
        Satellite => "satellite",
        Sdn => "sdn",
        FiveG => "5g",
        Malware => "malware",
        Ddos => "ddos",
        Phishing => "phishing",
        Botnet => "botnet",
        Apt => "apt",
        Iot => "iot",
        Other => "other",
    }
}

worded! {
    /// A kind of indicator a STIX file carries (`stix_iocs`).
    pub enum IocKind ("an IOC kind") {
        Ip => "ip",
        Port => "port",
        FlowFeature => "flow_feature",
        Hash => "hash",
        Url => "url",
        Payload => "payload",
    }
}

worded! {
    /// A kind of observable that can become an indicator (its STIX type).
    pub enum IndicatorType ("an indicator type") {
        Ipv4 => "ipv4-addr",
        Ipv6 => "ipv6-addr",
        Domain => "domain-name",
        Url => "url",
    }
}

worded! {
    /// A Traffic Light Protocol 2.0 level: who may see what the node emits. Ordered from the
    /// least to the most restricted.
    pub enum Tlp ("a TLP level") {
        Clear => "clear",
        Green => "green",
        Amber => "amber",
        AmberStrict => "amber+strict",
        Red => "red",
    }
}

impl Tlp {
    /// The id of the level's marking-definition (OASIS TLP 2.0 extension).
    pub fn marking_id(self) -> &'static str {
        match self {
            Tlp::Clear => "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
            Tlp::Green => "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
            Tlp::Amber => "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
            Tlp::AmberStrict => "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
            Tlp::Red => "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        }
    }

    /// `TLP:AMBER+STRICT`.
    pub fn name(self) -> String {
        format!("TLP:{}", self.as_str().to_ascii_uppercase())
    }

    /// The level a marking-definition id stands for: TLP 2.0's, and the STIX 2.1 predefined
    /// TLP 1.0 markings (white is clear).
    pub fn from_marking_id(id: &str) -> Option<Tlp> {
        if let Some(t) = Tlp::ALL.iter().copied().find(|t| t.marking_id() == id) {
            return Some(t);
        }
        Some(match id {
            "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9" => Tlp::Clear,
            "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da" => Tlp::Green,
            "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82" => Tlp::Amber,
            "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed" => Tlp::Red,
            _ => return None,
        })
    }

    /// The most restricted level among an object's `object_marking_refs` (ids that are not
    /// TLP markings are passed over); `None` when no TLP marking is among them.
    pub fn strictest<'a>(refs: impl IntoIterator<Item = &'a str>) -> Option<Tlp> {
        refs.into_iter().filter_map(Tlp::from_marking_id).max()
    }

    /// The rank (0 clear … 4 red), as a store keeps it.
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: u8) -> Option<Tlp> {
        Tlp::ALL.get(usize::from(rank)).copied()
    }
}

worded! {
    /// A hidden danger's `judgeState` (verification).
    pub enum JudgeState ("a judgeState") {
        None => "judgeStateNone",
        True => "judgeStateTrue",
        False => "judgeStateFalse",
        Pass => "judgeStatePass",
    }
}

worded! {
    /// A hidden danger's `noticeState` (handling).
    pub enum NoticeState ("a noticeState") {
        None => "noticeStateNone",
        Done => "noticeStateDone",
        Finished => "noticeStateFinished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_out_of_range_is_refused() {
        for t in DataType::ALL {
            assert_eq!(DataType::from_number(t.number().into()), Some(*t));
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(serde_json::from_str::<DataType>(&json).unwrap(), *t);
        }
        assert_eq!(DataType::from_number(0), None);
        assert_eq!(DataType::from_number(6), None);
        let e = serde_json::from_str::<IssueLevel>("5").unwrap_err();
        assert!(
            e.to_string().contains("5 is not an issue level (0-4)"),
            "{e}"
        );
        assert_eq!(serde_json::to_string(&IssueLevel::Critical).unwrap(), "4");
        assert_eq!(DataType::Honeypot.label(), "蜜罐情报");
    }

    #[test]
    fn words_parse_ignoring_case_and_serialise_canonically() {
        assert_eq!(Tag::from_word_ignoring_case("5G"), Some(Tag::FiveG));
        assert_eq!(
            Tag::from_word_ignoring_case("HoneyPot"),
            Some(Tag::Honeypot)
        );
        assert_eq!(Tag::from_word_ignoring_case("honey"), None);
        assert_eq!(Tag::from_word("HoneyPot"), None);
        assert_eq!(
            serde_json::to_string(&IocKind::FlowFeature).unwrap(),
            "\"flow_feature\""
        );
        assert_eq!(
            serde_json::from_str::<JudgeState>("\"judgeStateTrue\"").unwrap(),
            JudgeState::True
        );
        let e = serde_json::from_str::<NoticeState>("\"done\"").unwrap_err();
        assert!(
            e.to_string().contains("noticeStateNone, noticeStateDone"),
            "{e}"
        );
    }

    #[test]
    fn the_strictest_marking_wins_and_other_markings_are_passed_over() {
        let statement = "marking-definition--1d1c3a9e-1a44-4ba5-a3b8-4a5e0d0f8e7a";
        assert_eq!(Tlp::strictest([]), None);
        assert_eq!(Tlp::strictest([statement]), None);
        assert_eq!(
            Tlp::strictest([Tlp::Green.marking_id(), statement, Tlp::Red.marking_id()]),
            Some(Tlp::Red)
        );
        // TLP 1.0's white is clear; amber (1.0) is below amber+strict (2.0).
        assert_eq!(
            Tlp::strictest([
                "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
                "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
            ]),
            Some(Tlp::Amber)
        );
        assert_eq!(
            Tlp::strictest([Tlp::AmberStrict.marking_id(), Tlp::Amber.marking_id()]),
            Some(Tlp::AmberStrict)
        );
    }

    #[test]
    fn tlp_levels_order_and_markings() {
        assert!(
            Tlp::Clear < Tlp::Green && Tlp::Amber < Tlp::AmberStrict && Tlp::AmberStrict < Tlp::Red
        );
        assert_eq!(Tlp::AmberStrict.name(), "TLP:AMBER+STRICT");
        for t in Tlp::ALL {
            assert_eq!(Tlp::from_marking_id(t.marking_id()), Some(*t));
            assert_eq!(Tlp::from_rank(t.rank()), Some(*t));
        }
        assert_eq!(
            Tlp::from_marking_id("marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"),
            Some(Tlp::Clear)
        );
        assert_eq!(Tlp::from_word("amber+strict"), Some(Tlp::AmberStrict));
    }

    #[test]
    fn traffic_type_follows_the_tags() {
        assert_eq!(TrafficType::from_tags(&[Tag::Sdn]), TrafficType::Sdn);
        assert_eq!(
            TrafficType::from_tags(&[Tag::Honeypot, Tag::FiveG]),
            TrafficType::FiveG
        );
        assert_eq!(
            TrafficType::from_tags(&[Tag::Satellite]),
            TrafficType::Satellite
        );
        assert_eq!(
            TrafficType::from_tags(&[Tag::Honeypot]),
            TrafficType::NotTraffic
        );
        assert_eq!(DataType::Honeypot.default_tags(), [Tag::Honeypot]);
        assert!(DataType::MaliciousTraffic.default_tags().is_empty());
    }
}
